"""Memory (issue 6, point 3): one big message at a time, peak RSS of each tool.

Each size is a separate run on a fresh mailbox holding only that message (multidrop,
Delivered-To anna). The body that arrived is compared byte for byte (SHA-256, line ends
normalised) with the one that was sent.
"""

from __future__ import annotations

from collections.abc import Callable

from bench import corpus, peers
from bench.contest import Bench, Outcome, attempt
from bench.stack import LOCAL_DOMAIN, local_files
from bench.table import NA, mb, secs, table

RECIPIENT = f"anna@{LOCAL_DOMAIN}"
SMARTPOP_LIMIT_MB = 60.0


def run(bench: Bench, sizes_mb: list[int]) -> str:
    """Every tool x every size; return the markdown section."""
    bench.stack.add_users([(RECIPIENT, "x"), (peers.FALLBACK, "x")])
    py = bench.smartpop_python
    tools: list[tuple[str, Callable[[peers.Job], peers.Command]]] = [
        ("SmartPop", lambda job: peers.smartpop(job, py)),
        ("getmail6 (sendmail)", peers.getmail),
        ("fetchmail (smtp)", lambda job: peers.fetchmail(job, "smtp")),
        ("fetchmail (mda sendmail)", lambda job: peers.fetchmail(job, "mda")),
        ("baseline poplib+smtplib", peers.baseline),
    ]
    results: dict[tuple[str, int], Outcome] = {}
    for size in sizes_mb:
        for name, build in tools:
            print(f"  memory: {name}, {size} MB ...", flush=True)

            def make(tag: str, size: int = size) -> list[corpus.Sample]:
                return [corpus.message(tag, 0, RECIPIENT, size * 1024 * 1024)]

            o = attempt(bench, name, build, make, inspect=lambda samples: _same_body(bench, samples))
            results[(name, size)] = o
            m = o.measured
            print(f"    {secs(m.wall if m else None)} s, {mb(m.peak_rss_mb if m else None)} MB, "
                  f"{o.check.text() if o.check else ''} {o.extra} {o.note}", flush=True)
    head = ["tool"]
    for size in sizes_mb:
        head += [f"{size} MB: wall (s)", f"{size} MB: peak RSS (MB)", f"{size} MB: check"]
    rows = []
    for name, _ in tools:
        row = [name]
        for size in sizes_mb:
            o = results[(name, size)]
            m = o.measured
            verdict = (o.check.text() if o.check else NA) + (f", {o.extra}" if o.extra else "")
            row += [secs(o.done_time), mb(m.peak_rss_mb if m else None), verdict + (f"; {o.note}" if o.note else "")]
        rows.append(row)
    sizes = ", ".join(f"{s} MB" for s in sizes_mb)
    return "\n".join([f"#### Memory: one message of {sizes}, POP3S multidrop -> Postfix", "",
                      table(head, rows), "", _verdict(results, sizes_mb), ""])


def _same_body(bench: Bench, samples: list[corpus.Sample]) -> str:
    """'body identical' if the delivered copy's body hashes like the original's."""
    files = local_files(bench.stack, samples[0].recipient)
    if len(files) != 1:
        return ""
    same = corpus.body_sha256(files[0].read_bytes()) == corpus.body_sha256(samples[0].data)
    return "body identical" if same else "BODY DIFFERS"


def _verdict(results: dict[tuple[str, int], Outcome], sizes_mb: list[int]) -> str:
    rss = {s: results[("SmartPop", s)].measured for s in sizes_mb}
    if any(m is None or m.returncode != 0 for m in rss.values()):
        return f"- SmartPop peak RSS < {SMARTPOP_LIMIT_MB:.0f} MB: {NA} (a SmartPop run failed)"
    peaks = {s: m.peak_rss_mb for s, m in rss.items() if m is not None}
    top = max(peaks.values())
    lines = [f"- SmartPop peak RSS < {SMARTPOP_LIMIT_MB:.0f} MB: max {top:.0f} MB -> "
             f"{'met' if top < SMARTPOP_LIMIT_MB else 'NOT met'}"]
    if len(peaks) >= 2:
        small, big = min(peaks), max(peaks)
        growth = peaks[big] - peaks[small]
        flat = growth < 0.05 * (big - small)
        lines.append(f"- growth from {small} MB to {big} MB message: {growth:+.1f} MB of RSS for "
                     f"{big - small} MB more message -> {'flat' if flat else 'GROWS with message size'}")
    return "\n".join(lines)
