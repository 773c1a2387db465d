"""Many accounts (issue 6, point 4).

A: N per-user accounts (single mode, one local mailbox each), every 20th holding 5
   messages, the rest empty: one `smartpop fetch` pass, cold (Dovecot creates the homes)
   and again with nothing new. Also the peak number of concurrent POP3S sessions.
B: K small messages kept on the server (keep_on_server): the first pass delivers them all,
   then passes with nothing new are timed; they must stay fast (no quadratic UIDL/state work).
"""

from __future__ import annotations

import time
from collections import Counter

from bench import corpus, peers, proc
from bench.contest import Bench
from bench.sessions import PeakSessions
from bench.stack import LOCAL_DOMAIN, PROVIDER_DOMAIN, empty_local, wait_local
from bench.table import NA, mb, secs, table
from bench.verify import census

FULL_EVERY = 20
PER_FULL = 5
MANY_LIMIT = 10.0
KEEP_LIMIT = 2.0


def run(bench: Bench, accounts: int, keep: int) -> str:
    """Both parts; return the markdown section."""
    bench.stack.add_users([(peers.FALLBACK, "x")])
    out = [_many(bench, accounts)]
    if keep > 0:
        out.append(_kept(bench, keep))
    return "\n".join(out)


def _fetch(bench: Bench, data_tag: str, label: str, port: int) -> tuple[proc.Measured, int]:
    """One timed `smartpop fetch` pass with the config already in place; (measured, peak sessions)."""
    cmd, env = peers.smartpop_fetch(bench.smartpop_python, bench.scratch / data_tag)
    print(f"  accounts: {label} ...", flush=True)
    with PeakSessions(port) as peak:
        m = proc.run(cmd, env=env, timeout=3600, log=bench.logs / f"{data_tag}-{label.replace(' ', '_')}.log")
    print(f"    exit {m.returncode} after {m.wall:.2f} s, CPU {m.cpu:.2f} s, {m.peak_rss_mb:.0f} MB, "
          f"peak {peak.peak} sessions", flush=True)
    return m, peak.peak


def _many(bench: Bench, count: int) -> str:
    tag = bench.tag("m")
    pairs, docs, samples = [], [], []
    for i in range(count):
        user = f"{tag}a{i:03d}@{PROVIDER_DOMAIN}"
        local = f"{tag}u{i:03d}@{LOCAL_DOMAIN}"
        pairs += [(user, f"pw{i}"), (local, "x")]
        docs.append(peers.account_doc(bench.stack, f"acct{i:03d}", user, f"pw{i}", mode="single", deliver_to=local))
        if i % FULL_EVERY == 0:
            mine = [corpus.message(f"{tag}{i}", n, local, 4096, envelope=False) for n in range(PER_FULL)]
            samples += mine
    print(f"  accounts: creating {count} provider + {count} local mailboxes ...", flush=True)
    bench.stack.add_users(pairs)
    for sample in samples:
        idx = int(sample.recipient.split("@")[0][len(tag) + 1:])
        bench.stack.fill(f"{tag}a{idx:03d}@{PROVIDER_DOMAIN}", [sample.data])
    peers.write_smartpop_config(bench.stack, bench.scratch / tag, docs)
    rows = []
    verdict = ""
    for label in ("first pass", "second pass, nothing new"):
        m, peak = _fetch(bench, tag, label, bench.stack.pop3s_port)
        check = NA
        if label == "first pass":
            wait_local(bench.stack, dict(Counter(s.recipient for s in samples)), 120)
            c = census(bench.stack, samples)
            check = c.text()
        note = "" if m.returncode == 0 else f"; exit {m.returncode}: {_tail(m.output)}"
        rows.append([label, str(count), str(len(samples) if label == "first pass" else 0), secs(m.wall),
                     secs(m.cpu), mb(m.peak_rss_mb), str(peak), check + note])
        if label == "first pass":
            ok = m.returncode == 0 and m.wall < MANY_LIMIT
            verdict = (f"- {count} accounts polled in one pass in {m.wall:.2f} s (target < {MANY_LIMIT:.0f} s) -> "
                       f"{'met' if ok else 'NOT met'}; at most {peak} POP3S session(s) at once")
    empty_local(bench.stack, sorted({s.recipient for s in samples}))
    head = ["pass", "accounts", "messages", "wall (s)", "CPU (s)", "peak RSS (MB)", "max sessions", "check"]
    return "\n".join([f"#### Many accounts: {count} POP3S accounts, {len(samples)} messages in "
                      f"{len(samples) // PER_FULL} of them, one `smartpop fetch`", "", table(head, rows), "",
                      verdict, ""])


def _kept(bench: Bench, count: int) -> str:
    tag = bench.tag("k")
    user, password = f"{tag}src@{PROVIDER_DOMAIN}", "keep-pw"
    local = f"{tag}dst@{LOCAL_DOMAIN}"
    bench.stack.add_users([(user, password), (local, "x")])
    print(f"  accounts: filling {count} messages to keep ...", flush=True)
    start = time.perf_counter()
    samples = [corpus.message(tag, n, local, 2048, envelope=False) for n in range(count)]
    bench.stack.fill(user, [s.data for s in samples])
    print(f"    filled in {time.perf_counter() - start:.1f} s", flush=True)
    doc = peers.account_doc(bench.stack, "kept", user, password, mode="single", deliver_to=local,
                            keep_on_server=True)
    peers.write_smartpop_config(bench.stack, bench.scratch / tag, [doc])
    rows = []
    quiet: list[float] = []
    for label in ("first pass (delivers all)", "second pass, nothing new", "third pass, nothing new"):
        m, _ = _fetch(bench, tag, label, bench.stack.pop3s_port)
        check = NA
        if label.startswith("first"):
            wait_local(bench.stack, {local: count}, 300)
            check = census(bench.stack, samples).text()
            left = bench.stack.provider_count(user)
            check += f"; {left} still on the server"
        else:
            quiet.append(m.wall if m.returncode == 0 else float("inf"))
        note = "" if m.returncode == 0 else f"; exit {m.returncode}: {_tail(m.output)}"
        rows.append([label, secs(m.wall), f"{count / m.wall:.0f}" if label.startswith("first") else "",
                     secs(m.cpu), mb(m.peak_rss_mb), check + note])
    empty_local(bench.stack, [local])
    best = min(quiet) if quiet else None
    verdict = (f"- poll with nothing new over {count} kept messages: {secs(best)} s (target < {KEEP_LIMIT:.0f} s) "
               f"-> {'met' if best is not None and best < KEEP_LIMIT else 'NOT met'}")
    head = ["pass", "wall (s)", "msgs/s", "CPU (s)", "peak RSS (MB)", "check"]
    return "\n".join([f"#### Kept on the server: {count} x ~2 KB, `keep_on_server: true`, single-drop POP3S", "",
                      table(head, rows), "", verdict, ""])


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output").replace("|", "/")[:160]
