"""Throughput (issue 6, points 1-2): N x ~10 KB multidrop over POP3S into Postfix, every tool.

Order: SmartPop, baseline, fetchmail (mda), fetchmail (smtp), getmail6, then SmartPop and
the baseline once more. The repeats show how noisy the shared machine was; the ratios use
the first runs. "done" is the moment every message sat in its maildir with Postfix's queue
empty: sendmail-based tools exit before Postfix has written the last file.
"""

from __future__ import annotations

import os
import pstats
from functools import partial
from io import StringIO
from pathlib import Path

from bench import corpus, peers
from bench.contest import Bench, Outcome, attempt
from bench.peers import ROOT, Job
from bench.stack import LOCAL_DOMAIN
from bench.table import NA, mb, ratio, secs, spread, table

RECIPIENTS = [f"anna@{LOCAL_DOMAIN}", f"ben@{LOCAL_DOMAIN}"]
SIZE = 10 * 1024


def run(bench: Bench, messages: int, *, profile: bool = False, slow: bool = True) -> str:
    """Run every contender on `messages` messages; return the markdown section."""
    bench.stack.add_users([(r, "x") for r in [*RECIPIENTS, peers.FALLBACK]])
    make = partial(_samples, messages=messages)
    py = bench.smartpop_python
    plan = [
        ("SmartPop", lambda job: peers.smartpop(job, py)),
        ("baseline poplib+smtplib", peers.baseline),
        ("fetchmail (mda sendmail)", lambda job: peers.fetchmail(job, "mda")),
        ("fetchmail (smtp)", lambda job: peers.fetchmail(job, "smtp")),
        ("getmail6 (sendmail)", peers.getmail),
        ("SmartPop, repeat", lambda job: peers.smartpop(job, py)),
        ("baseline, repeat", peers.baseline),
    ]
    if not slow:
        plan = [p for p in plan if p[0] != "fetchmail (smtp)"]
    outcomes: list[Outcome] = []
    for name, build in plan:
        print(f"  throughput: {name} ...", flush=True)
        outcomes.append(attempt(bench, name, build, make))
        _progress(outcomes[-1])
    text = [f"#### Throughput: {messages} x ~10 KB, POP3S multidrop (Delivered-To to 2 users) -> Postfix SMTP", "",
            _table(outcomes, messages), "", _verdict(outcomes), ""]
    if profile:
        text += [_profile(bench, make), ""]
    return "\n".join(text)


def _samples(tag: str, messages: int) -> list[corpus.Sample]:
    return corpus.multidrop(tag, messages, RECIPIENTS, SIZE)


def _progress(o: Outcome) -> None:
    m = o.measured
    print(f"    exit {secs(m.wall if m else None)} s, done {secs(o.done_time)} s, "
          f"{o.check.text() if o.check else ''} {o.note}", flush=True)


def _by_name(outcomes: list[Outcome], name: str) -> Outcome | None:
    return next((o for o in outcomes if o.name == name), None)


def _good_time(o: Outcome | None) -> float | None:
    """A time worth comparing: only from a run that delivered everything exactly once."""
    if o is None or o.check is None or not o.check.ok:
        return None
    return o.done_time


def _table(outcomes: list[Outcome], messages: int) -> str:
    ref = _good_time(_by_name(outcomes, "SmartPop"))
    rows = []
    for o in outcomes:
        m = o.measured
        t = _good_time(o)
        rows.append([o.name, secs(m.wall if m else None), secs(o.done_time),
                     f"{messages / o.done_time:.0f}" if o.done_time else NA,
                     secs(m.cpu if m else None), mb(m.peak_rss_mb if m else None),
                     ratio(t / ref) if t and ref else NA,
                     (o.check.text() if o.check else NA) + (f"; {o.note}" if o.note else "")])
    return table(["tool", "exit (s)", "done (s)", "msgs/s", "CPU (s)", "peak RSS (MB)",
                  "time / SmartPop's", "delivery check"], rows)


def _verdict(outcomes: list[Outcome]) -> str:
    sp = _good_time(_by_name(outcomes, "SmartPop"))
    lines = []

    def line(label: str, peer: str, target: str, want: float, faster: bool = True) -> None:
        t = _good_time(_by_name(outcomes, peer))
        if sp is None or t is None:
            lines.append(f"- {label}: {NA} (a run did not deliver every message exactly once)")
            return
        value = t / sp if faster else sp / t
        met = value >= want if faster else value <= want
        lines.append(f"- {label}: {value:.2f}x ({target}) -> {'met' if met else 'NOT met'}")

    line("SmartPop speed-up over fetchmail (mda)", "fetchmail (mda sendmail)", "target >= 3x", 3.0)
    line("SmartPop speed-up over getmail6", "getmail6 (sendmail)", "target >= 5x", 5.0)
    line("SmartPop time / baseline time", "baseline poplib+smtplib", "target <= 0.8x", 0.8, faster=False)
    sp_noise = spread(_repeat(outcomes, "SmartPop"), _repeat(outcomes, "SmartPop, repeat"))
    base_noise = spread(_repeat(outcomes, "baseline poplib+smtplib"), _repeat(outcomes, "baseline, repeat"))
    lines.append(f"- noise (the same run repeated, difference / mean): SmartPop {sp_noise}, baseline {base_noise}")
    return "\n".join(lines)


def _repeat(outcomes: list[Outcome], name: str) -> float | None:
    o = _by_name(outcomes, name)
    return o.done_time if o else None


def _profile(bench: Bench, make: object) -> str:
    """One more SmartPop run under cProfile: where its time goes (top functions by own time)."""
    out = bench.scratch / "smartpop.prof"

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
            f"{secs(o.done_time)} s), top functions by own CPU time:")
    return f"{head}\n\n```\n{body}\n```"

