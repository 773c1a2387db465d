"""Throughput (issue 6, points 1-2): N x ~10 KB multidrop over POP3S into Postfix, every tool.

Order: SmartPop, baseline, fetchmail (mda), fetchmail (smtp), getmail6, then more
SmartPop/baseline pairs (--pairs). The ratios to fetchmail and getmail6 use the first
SmartPop run; the ratio to the baseline is the median over the pairs, because a single
run on this machine is noisy by about 10 %. Every run also records how many CPU-seconds
the whole machine used (Postfix and Dovecot included): on 2 CPUs that budget, not the
network, bounds how fast any collector can be.

"done" is the moment every message sat in its maildir with Postfix's queue empty:
sendmail-based tools exit before Postfix has written the last file.
"""

from __future__ import annotations

import os
import pstats
import statistics
from functools import partial
from io import StringIO
from pathlib import Path
from typing import Callable

from bench import corpus, machine, peers, profcats
from bench.contest import Bench, Outcome, attempt
from bench.peers import ROOT, Job
from bench.stack import LOCAL_DOMAIN
from bench.table import NA, mb, ratio, secs, table

RECIPIENTS = [f"anna@{LOCAL_DOMAIN}", f"ben@{LOCAL_DOMAIN}"]
SIZE = 10 * 1024


def run(bench: Bench, messages: int, *, profile: bool = False, slow: bool = True, pairs: int = 3,
        with_peers: bool = True) -> str:
    """Run every contender on `messages` messages; return the markdown section."""
    bench.stack.add_users([(r, "x") for r in [*RECIPIENTS, peers.FALLBACK]])
    make = partial(_samples, messages=messages)
    py = bench.smartpop_python
    plan: list[tuple[str, Callable[[Job], peers.Command]]] = [
        (SMARTPOP, lambda job: peers.smartpop(job, py)),
        # The plain loop runs on SmartPop's interpreter: a CPU ratio across two Pythons
        # (say 3.8 against 3.13) would mostly measure the interpreters.
        (BASELINE, lambda job: peers.baseline(job, py)),
        ("fetchmail (mda sendmail)", lambda job: peers.fetchmail(job, "mda")),
        ("fetchmail (smtp)", lambda job: peers.fetchmail(job, "smtp")),
        ("getmail6 (sendmail)", peers.getmail),
    ]
    # More SmartPop/baseline pairs, alternating: one pair is a coin flip on a noisy machine.
    for n in range(2, max(1, pairs) + 1):
        plan += [(f"SmartPop, pair {n}", lambda job: peers.smartpop(job, py)),
                 (f"baseline, pair {n}", lambda job: peers.baseline(job, py))]
    if not slow:
        plan = [p for p in plan if p[0] != "fetchmail (smtp)"]
    if not with_peers:
        plan = [p for p in plan if not p[0].startswith(("fetchmail", "getmail"))]
    outcomes: list[Outcome] = []
    for name, build in plan:
        print(f"  throughput: {name} ...", flush=True)
        outcomes.append(attempt(bench, name, build, make))
        _progress(outcomes[-1])
    text = [f"#### Throughput: {messages} x ~10 KB, POP3S multidrop (Delivered-To to 2 users) -> Postfix SMTP", "",
            _table(outcomes, messages), "", _verdict(outcomes), ""]
    if profile:
        text += [_profile(bench, make, _median_cpu(outcomes, "SmartPop")), ""]
    return "\n".join(text)


SMARTPOP = "SmartPop"
BASELINE = "baseline poplib+smtplib"


def _samples(tag: str, messages: int) -> list[corpus.Sample]:
    return corpus.multidrop(tag, messages, RECIPIENTS, SIZE)


def _progress(o: Outcome) -> None:
    m = o.measured
    busy = f", machine {secs(m.machine_busy)} CPU-s, {_pct(m.machine_util)} busy" if m else ""
    print(f"    exit {secs(m.wall if m else None)} s, done {secs(o.done_time)} s{busy}, "
          f"{o.check.text() if o.check else ''} {o.note}", flush=True)


def _pct(value: float | None) -> str:
    return NA if value is None else f"{value * 100:.0f} %"


def _by_name(outcomes: list[Outcome], name: str) -> Outcome | None:
    return next((o for o in outcomes if o.name == name), None)


def _good_time(o: Outcome | None) -> float | None:
    """A time worth comparing: only from a run that delivered everything exactly once."""
    if o is None or o.check is None or not o.check.ok:
        return None
    return o.done_time


def _others(o: Outcome) -> float | None:
    """CPU-seconds of everything but the tool during its run: mostly Postfix and Dovecot."""
    m = o.measured
    if m is None or m.machine_busy is None:
        return None
    return max(0.0, m.machine_busy - m.cpu)


def _table(outcomes: list[Outcome], messages: int) -> str:
    ref = _good_time(_by_name(outcomes, SMARTPOP))
    rows = []
    for o in outcomes:
        m = o.measured
        t = _good_time(o)
        rows.append([o.name, secs(m.wall if m else None), secs(o.done_time),
                     f"{messages / o.done_time:.0f}" if o.done_time else NA,
                     secs(m.cpu if m else None), f"{m.cpu / messages * 1000:.2f}" if m and m.cpu else NA,
                     mb(m.peak_rss_mb if m else None),
                     secs(m.machine_busy if m else None), secs(_others(o)), _pct(m.machine_util if m else None),
                     ratio(t / ref) if t and ref else NA,
                     (o.check.text() if o.check else NA) + (f"; {o.note}" if o.note else "")])
    return table(["tool", "exit (s)", "done (s)", "msgs/s", "CPU (s)", "CPU per message (ms)", "peak RSS (MB)",
                  "machine CPU (s)",
                  "others' CPU (s)", "CPUs busy", "time / SmartPop's", "delivery check"], rows)


def _pairs(outcomes: list[Outcome]) -> list[tuple[Outcome, Outcome]]:
    """The SmartPop/baseline pairs, first pair first."""
    found = [(_by_name(outcomes, SMARTPOP), _by_name(outcomes, BASELINE))]
    n = 2
    while _by_name(outcomes, f"SmartPop, pair {n}") is not None:
        found.append((_by_name(outcomes, f"SmartPop, pair {n}"), _by_name(outcomes, f"baseline, pair {n}")))
        n += 1
    return [(a, b) for a, b in found if a is not None and b is not None]


def _verdict(outcomes: list[Outcome]) -> str:
    sp = _good_time(_by_name(outcomes, SMARTPOP))
    lines = []

    def line(label: str, peer: str, target: str, want: float) -> None:
        t = _good_time(_by_name(outcomes, peer))
        if sp is None or t is None:
            lines.append(f"- {label}: {NA} (a run did not deliver every message exactly once)")
            return
        value = t / sp
        lines.append(f"- {label}: {value:.2f}x ({target}) -> {'met' if value >= want else 'NOT met'}")

    line("SmartPop speed-up over fetchmail (mda)", "fetchmail (mda sendmail)", "target >= 3x", 3.0)
    line("SmartPop speed-up over getmail6", "getmail6 (sendmail)", "target >= 5x", 5.0)
    pairs = _pairs(outcomes)
    # Only pairs where both runs delivered everything exactly once: a failed run's time means nothing.
    ratios = [ta / tb for ta, tb in ((_good_time(a), _good_time(b)) for a, b in pairs) if ta and tb]
    if ratios:
        mid = statistics.median(ratios)
        each = ", ".join(f"{r:.2f}x" for r in ratios)
        lines.append(f"- SmartPop time / baseline time: {mid:.2f}x median of {_n(len(ratios), 'pair')} ({each}) "
                     f"(target <= 1.0x) -> {'met' if mid <= 1.0 else 'NOT met'}")
    cpu = [a.measured.cpu / b.measured.cpu for a, b in pairs
           if _good_time(a) and _good_time(b) and a.measured and b.measured and a.measured.cpu and b.measured.cpu]
    if cpu:
        mid = statistics.median(cpu)
        each = ", ".join(f"{r:.2f}x" for r in cpu)
        lines.append(f"- SmartPop CPU / baseline CPU: {mid:.2f}x median of {_n(len(cpu), 'pair')} ({each}) "
                     f"(target <= 1.5x) -> {'met' if mid <= 1.5 else 'NOT met'}")
    else:
        lines.append(f"- SmartPop time / baseline time: {NA} (no pair delivered every message exactly once)")
    sp_runs = [a for a, _ in pairs if _good_time(a)]
    base_runs = [b for _, b in pairs if _good_time(b)]
    lines.append(f"- done times across the pairs: SmartPop {_range(sp_runs)}, baseline {_range(base_runs)}")
    base_times = [t for t in (_good_time(b) for b in base_runs) if t]
    base_mid = statistics.median(base_times) if base_times else None
    lines.append("- CPU budget (median of SmartPop runs): " + _budget(sp_runs, "SmartPop", base_mid))
    lines.append("- CPU budget (median of baseline runs): " + _budget(base_runs, "baseline", None))
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _range(runs: list[Outcome]) -> str:
    times = [t for t in (_good_time(o) for o in runs) if t]
    if not times:
        return NA
    mid = statistics.median(times)
    return f"{min(times):.2f}-{max(times):.2f} s (spread {(max(times) - min(times)) / mid * 100:.0f} % of the median)"


def _budget(runs: list[Outcome], who: str, baseline_time: float | None) -> str:
    """Why a run cannot be faster on this machine: every CPU-second it and the servers need."""
    # (others, own, busy share) of each run whose machine CPU was read: every median from the same runs.
    cpu = [(max(0.0, m.machine_busy - m.cpu), m.cpu, m.machine_util) for o in runs if (m := o.measured) is not None
           and m.machine_busy is not None and m.machine_util is not None]
    if not cpu:
        return NA
    cpus = len(os.sched_getaffinity(0))
    o_cpu, t_cpu, u = (statistics.median(column) for column in zip(*cpu))
    total = o_cpu + t_cpu
    text = (f"others {o_cpu:.2f} s + {who} {t_cpu:.2f} s = {total:.2f} CPU-s on {_n(cpus, 'CPU')}, "
            f"{u * 100:.0f} % busy -> at least {total / cpus:.2f} s even at 100 % busy")
    if baseline_time:
        text += f"; the baseline's median is {baseline_time:.2f} s"
    return text


def _median_cpu(outcomes: list[Outcome], prefix: str) -> float:
    """Median CPU-seconds of the runs whose name starts with `prefix` (0 when none was measured)."""
    cpus = [o.measured.cpu for o in outcomes if o.name.startswith(prefix) and o.measured is not None]
    return statistics.median(cpus) if cpus else 0.0


def _profile(bench: Bench, make: object, unprofiled_cpu: float) -> str:
    """One more SmartPop run under cProfile: where its time goes, by concern and by function."""
    out = bench.scratch / "smartpop.prof"
    version = machine.interpreter_version(bench.smartpop_python)
    if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) >= (3, 12):
        # One cProfile per interpreter from 3.12 on (sys.monitoring): see bench/threadprof.py.
        return (f"Profile: {NA} (a profile of every thread needs SmartPop under Python 3.11 or older, this run "
                f"used {version}: pass --smartpop-python)")

    def build(job: Job) -> peers.Command:
        cmd, env = peers.smartpop(job, bench.smartpop_python)
        # SmartPop hands mail over in worker threads: profile every thread (bench/threadprof.py).
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT)])
        return [cmd[0], "-m", "bench.threadprof", str(out), *cmd[1:]], env

    print("  throughput: SmartPop under cProfile (every thread, CPU time) ...", flush=True)
    o = attempt(bench, "SmartPop (cProfile)", build, make)  # type: ignore[arg-type]
    _progress(o)
    if not Path(out).exists():
        return f"Profile: {NA} ({o.note or 'no profile written'})"
    buf = StringIO()
    stats = pstats.Stats(str(out), stream=buf)
    stats.sort_stats("tottime").print_stats(18)
    body = "\n".join(line for line in buf.getvalue().splitlines() if line.strip())
    head = (f"Profile of one SmartPop run (cProfile in every thread, CPU time per thread, so slower: done after "
            f"{secs(o.done_time)} s). Own CPU time by concern (bench/profcats.py), the shares applied to the "
            f"median SmartPop run above ({unprofiled_cpu:.2f} CPU-s):")
    concerns = "\n".join(profcats.table(profcats.by_concern(stats), unprofiled_cpu))
    others = ", ".join(f"{where.rsplit('/', 1)[-1]} {own:.2f} s" for where, own in profcats.top_other(stats, 12))
    concerns += f"\n\nLargest in 'other' (own time under cProfile): {others}"
    return f"{head}\n\n{concerns}\n\nTop functions by own CPU time:\n\n```\n{body}\n```"

