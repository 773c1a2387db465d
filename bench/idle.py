"""IMAP IDLE push latency (issue 6, point 5).

An IMAP account with "idle": true and a 3600 s polling interval runs under `smartpop serve`.
Messages reach the provider through SMTP (a small aiosmtpd MX that writes them into the
provider's maildir, as a provider's LDA would); we time from that MX's 250 to the file in
the local maildir. With a 3600 s interval only push can deliver within the wait, so a
missing push shows up as "not available" rather than as a polling figure.
"""

from __future__ import annotations

import os
import smtplib
import statistics
import time
from pathlib import Path

from bench import corpus, peers, proc
from bench.contest import Bench
from bench.stack import LOCAL_DOMAIN, PROVIDER_DOMAIN, local_files
from bench.table import NA, table

FIRST_WAIT = 30.0
PUSH_LIMIT = 2.0


class ProviderMX:
    """aiosmtpd on a free port: each accepted message becomes a file in the mailbox's new/."""

    def __init__(self, maildir: Path, uid: int, gid: int) -> None:
        from aiosmtpd.controller import Controller

        from support.ports import free_ports

        self.maildir, self.uid, self.gid = maildir, uid, gid
        self.port = free_ports(1)[0]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        """Store atomically (tmp/ then rename into new/) and answer 250."""
        data = envelope.original_content or envelope.content  # type: ignore[attr-defined]
        name = f"{time.time_ns()}.M{os.getpid()}.bench"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(data)
        os.chown(tmp, self.uid, self.gid)
        os.rename(tmp, self.maildir / "new" / name)
        return "250 2.0.0 stored"


def run(bench: Bench, count: int) -> str:
    """Serve, inject `count` messages one at a time, time each arrival; the markdown section."""
    tag = bench.tag("i")
    user, password = f"{tag}src@{PROVIDER_DOMAIN}", "idle-pw"
    local = f"{tag}dst@{LOCAL_DOMAIN}"
    bench.stack.add_users([(user, password), (local, "x"), (peers.FALLBACK, "x")])
    maildir = bench.stack.provider_maildir(user)
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    # Up to the domain dir: made here as root, it would keep Dovecot (vmail) from creating the
    # homes of later users of that domain (the quiet scenario's polls then all failed).
    for node in (maildir / "tmp", maildir / "new", maildir / "cur", maildir, maildir.parent, maildir.parent.parent):
        os.chown(node, bench.stack.uid, bench.stack.gid)
    from support.ports import free_ports

    data = bench.scratch / tag
    doc = peers.account_doc(bench.stack, "pushed", user, password, protocol="imap", mode="single",
                            deliver_to=local, idle=True, interval=3600)
    peers.write_smartpop_config(bench.stack, data, [doc], web_port=free_ports(1)[0])
    mx = ProviderMX(maildir, bench.stack.uid, bench.stack.gid)
    mx.controller.start()
    server = proc.start([bench.smartpop_python, "-m", "smartpop", "--data", str(data), "serve"],
                        env=peers.smartpop_env(), log=bench.logs / f"{tag}-serve.log")
    latencies: list[float] = []
    note = ""
    try:
        time.sleep(5)  # start-up and the first (empty) poll
        if server.poll() is not None:
            note = f"`smartpop serve` exited with {server.returncode}"
        for n in range(count):
            if note:
                break
            sample = corpus.message(tag, n, local, 4096, envelope=False)
            with smtplib.SMTP("127.0.0.1", mx.port, timeout=30) as smtp:
                smtp.sendmail(f"sender{n}@remote.test", [user], sample.data.replace(b"\n", b"\r\n"))
            sent = time.perf_counter()
            wait = FIRST_WAIT if n == 0 else 60.0
            while len(local_files(bench.stack, local)) < n + 1 and time.perf_counter() - sent < wait:
                time.sleep(0.01)
            if len(local_files(bench.stack, local)) < n + 1:
                note = (f"message {n + 1} did not arrive within {wait:.0f} s of reaching the provider "
                        "(polling interval 3600 s): SmartPop does not push via IMAP IDLE yet")
                break
            latencies.append(time.perf_counter() - sent)
    finally:
        proc.stop(server)
        mx.controller.stop()
    return _report(count, latencies, note)


def _report(count: int, latencies: list[float], note: str) -> str:
    head = f"#### IMAP IDLE push: {count} messages injected one at a time via SMTP, `smartpop serve`"
    if len(latencies) < count:
        row = ["SmartPop (IMAP IDLE)", f"{len(latencies)}/{count}", NA, NA, NA, note or NA]
        return "\n".join([head, "", table(["tool", "arrived", "median (s)", "p95 (s)", "max (s)", "note"], [row]),
                          "", f"- delivered within {PUSH_LIMIT:.0f} s of arrival: {NA} ({note})", ""])
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    med = statistics.median(ordered)
    row = ["SmartPop (IMAP IDLE)", f"{count}/{count}", f"{med:.2f}", f"{p95:.2f}", f"{ordered[-1]:.2f}", ""]
    verdict = f"- p95 {p95:.2f} s (target: within {PUSH_LIMIT:.0f} s) -> {'met' if p95 <= PUSH_LIMIT else 'NOT met'}"
    return "\n".join([head, "", table(["tool", "arrived", "median (s)", "p95 (s)", "max (s)", "note"], [row]), "",
                      verdict, ""])
