"""bench/run: bring up Dovecot + Postfix, run the chosen benches, print markdown, clean up.

    bench/run [--messages 2000] [--only throughput|memory|accounts|idle ...] [--idle-minutes 20] [--save FILE]

Everything runs on loopback, on ports chosen at start-up, under short dirs in /tmp. The
stack, the scratch dir and every child process are removed on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Iterator

from bench import machine, peers, proc
from bench.contest import Bench

BENCHES = ["throughput", "memory", "accounts", "idle"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="bench/run", description="SmartPop benchmarks against fetchmail, getmail6 "
                                "and a plain poplib+smtplib loop (issue 6). Needs root, dovecot and postfix.")
    p.add_argument("--only", action="append", choices=BENCHES, help="run only this bench (repeatable)")
    p.add_argument("--messages", type=int, default=2000, help="throughput: messages of ~10 KB (default 2000)")
    p.add_argument("--big", default="50,200", help="memory: message sizes in MB (default 50,200)")
    p.add_argument("--accounts", type=int, default=200, help="accounts bench: number of accounts (default 200)")
    p.add_argument("--keep-messages", type=int, default=100_000,
                   help="accounts bench: messages kept on the server (default 100000; 0 skips)")
    p.add_argument("--idle-messages", type=int, default=50,
                   help="idle bench, IMAP IDLE push: messages injected (default 50; 0 skips the push part)")
    p.add_argument("--idle-minutes", type=float, default=20.0,
                   help="idle bench, quiet serve with 10 accounts: minutes watched (default 20; 0 skips it)")
    p.add_argument("--idle-settle", type=float, default=90.0,
                   help="idle bench, quiet serve: seconds before the window starts (first polls; default 90)")
    p.add_argument("--no-slow", action="store_true", help="skip fetchmail over SMTP (~90 s for 2000 messages)")
    p.add_argument("--no-peers", action="store_true",
                   help="throughput: only SmartPop and the plain loop (no fetchmail, getmail6), for quick A/B runs")
    p.add_argument("--pairs", type=int, default=3,
                   help="throughput: SmartPop/baseline pairs, alternating; the verdict is their median (default 3)")
    p.add_argument("--cpus", metavar="LIST",
                   help="pin servers, tools and harness to these CPUs, e.g. 0 or 0,1 (default: all)")
    p.add_argument("--profile", action="store_true", help="throughput: one more SmartPop run under cProfile")
    p.add_argument("--smartpop-python", default=sys.executable,
                   help="interpreter for `python -m smartpop` (default: the harness's)")
    p.add_argument("--save", metavar="FILE", help="also write the markdown to FILE")
    p.add_argument("--keep-logs", action="store_true", help="keep the per-run tool logs (path printed at the end)")
    return p.parse_args(argv)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the selected benches and print (and optionally save) the markdown report."""
    args = parse(argv)
    from bench import stack as stackmod

    problem = _pin_or_refuse(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if not stackmod.have_mail_servers():
        print("bench/run needs root and the dovecot-core dovecot-pop3d dovecot-imapd postfix openssl packages",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    selected = args.only or BENCHES
    logs = Path(tempfile.mkdtemp(prefix="bl", dir="/tmp"))
    versions = {"fetchmail": peers.version([peers.FETCHMAIL, "--version"]).replace("This is ", ""),
                "getmail6": peers.version([peers.GETMAIL, "--version"]),
                "Dovecot": peers.version(["/usr/sbin/dovecot", "--version"]),
                "Postfix": peers.version(["/usr/sbin/postconf", "-d", "-h", "mail_version"])}
    out = [machine.header("SmartPop benchmark (bench/run)", versions, args.smartpop_python)]
    print(out[0], flush=True)
    stack = None
    bench = None
    started = time.monotonic()
    try:
        stack = stackmod.start()
        bench = Bench(stack, args.smartpop_python, logs)
        peers.warm_bytecode(args.smartpop_python)
        for name in selected:
            print(f"== {name} (load {machine.loadavg()})", flush=True)
            for section in _run_one(name, bench, args):  # each printed as soon as it is done
                out.append(section)
                print(section, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping children and servers", file=sys.stderr)
        return 130
    finally:
        proc.kill_all()
        if bench is not None:
            bench.cleanup()
        if stack is not None:
            stack.stop()
        if not args.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"tool logs kept in {logs}", file=sys.stderr)
    out.append(f"_bench/run took {time.monotonic() - started:.0f} s; load average at the end: {machine.loadavg()}_\n")
    report = "\n".join(out)
    print(out[-1])
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(report)
        print(f"saved to {args.save}", file=sys.stderr)
    return 0


def _pin_or_refuse(args: argparse.Namespace) -> str | None:
    """What is wrong with --pairs or --cpus, or None after pinning this process to --cpus."""
    if args.pairs < 1:
        return "bench/run: --pairs must be at least 1"
    if args.cpus is not None:  # "--cpus ''" is an error, not "all CPUs"
        allowed = os.sched_getaffinity(0)
        try:
            cpus = {int(x) for x in args.cpus.split(",") if x.strip()}
        except ValueError:
            cpus = set()
        if not cpus or not cpus <= allowed:
            return f"bench/run: --cpus {args.cpus!r}: give CPU numbers from {sorted(allowed)}, comma-separated"
        # Before the stack starts: Dovecot, Postfix and every tool inherit the affinity.
        os.sched_setaffinity(0, cpus)
    return None


def _run_one(name: str, bench: Bench, args: argparse.Namespace) -> Iterator[str]:
    """Dispatch to one bench module (imported late: each is independent); its markdown sections."""
    if name == "throughput":
        from bench import throughput

        yield throughput.run(bench, args.messages, profile=args.profile, slow=not args.no_slow, pairs=args.pairs,
                                 with_peers=not args.no_peers)
    elif name == "memory":
        from bench import memory

        yield memory.run(bench, [int(x) for x in args.big.split(",") if x.strip()])
    elif name == "accounts":
        from bench import accounts

        yield accounts.run(bench, args.accounts, args.keep_messages)
    else:
        from bench import idle, quiet

        if args.idle_messages > 0:
            yield idle.run(bench, args.idle_messages)
        if args.idle_minutes > 0:
            yield quiet.run(bench, args.idle_minutes, args.idle_settle)
        if args.idle_messages <= 0 and args.idle_minutes <= 0:
            yield "#### IDLE: nothing to do (--idle-messages 0 and --idle-minutes 0)\n"


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
