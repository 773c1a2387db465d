"""The mail trail's search over 100,000 rows (issue 16: "results in under 1 s").

`python -m bench.trail [--rows 100000] [--runs 15]` (no root, no mail servers).

Fills a fresh state store with --rows trail rows (about 1.25 copies each, 30 s apart, three
accounts, 50 sender domains: a busy month of a small company, three times over) through the
same schema the collector creates, then times trail.query.search() as the Trail page calls it
(first page of 50 plus the total count) for each kind of filter, and the CSV export of a
filtered search. Medians over --runs; the ratio is against a bare full scan of the trail table
(`SELECT COUNT(*) FROM trail WHERE size >= 0`) measured in the same run, which is what any
search must at worst beat on this machine.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "package")]

from bench import machine  # noqa: E402
from bench.cgi import median_ms  # noqa: E402
from bench.table import table  # noqa: E402
from smartpop.collector import statedb  # noqa: E402
from smartpop.trail import export, query  # noqa: E402

ACCOUNTS = ["sammelpostfach", "anna-box", "ben-box"]
OUTCOMES = ["delivered"] * 7 + ["fallback", "waiting", "duplicate"]
USERS = ["anna", "ben", "carla", "dieter", "emil", "postmaster"]


def fill(db: Path, rows: int, now: float) -> None:
    """`rows` trail rows, newest first, as the collector would have written them."""
    conn = statedb.connect(db)
    conn.execute("PRAGMA synchronous=OFF")  # the fill is set-up, not what is measured
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO trail (id, at, account, folder, uid, message_id, sender, from_addr, rule, detail, size,"
            " outcome, redelivered) VALUES (?,?,?,'',?,?,?,?,'Delivered-To',?,?,?,0)",
            ((i, now - i * 30.0, ACCOUNTS[i % 3], f"{i}.{i * 7}", f"<{i}.{i % 9973}@mail.kunde{i % 50}.de>",
              f"bounces+{i % 13}@kunde{i % 50}.de", f"info{i % 11}@kunde{i % 50}.de",
              f"Delivered-To: {USERS[i % 6]}@firma.de", 2000 + i % 50000, OUTCOMES[i % 10])
             for i in range(1, rows + 1)))
        conn.executemany("INSERT INTO trail_copies (trail_id, rcpt, placement, reply) VALUES (?,?,?,?)",
                         ((i, f"{USERS[(i + k) % 6]}@firma.de", "user", "250 2.0.0 Ok: queued as 4Xy")
                          for i in range(1, rows + 1) for k in range(1 + (i % 4 == 0))))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main(argv: List[str] | None = None) -> int:
    """Run the bench and print a markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sptrail", dir="/tmp"))
    try:
        db = root / "state.sqlite3"
        now = time.time()
        started = time.perf_counter()
        fill(db, args.rows, now)
        filled = time.perf_counter() - started

        def scan() -> None:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            conn.execute("SELECT COUNT(*) FROM trail WHERE size >= 0").fetchone()
            conn.close()

        cases = [
            ("no filter (newest 50 of all)", {}),
            ("since 2h", {"since": "2h"}),
            ("since 30d (everything)", {"since": "30d"}),
            ("account + outcome=fallback", {"account": "anna-box", "outcome": "fallback"}),
            ("sender (substring)", {"sender": "kunde17.de"}),
            ("recipient (substring)", {"rcpt": "carla@"}),
            ("Message-ID (exact)", {"message_id": "<4242.4242@mail.kunde42.de>"}),
            ("sender + recipient + since 7d", {"sender": "info3@", "rcpt": "dieter", "since": "7d"}),
            ("sender, no match", {"sender": "nobody.example"}),
        ]
        base = median_ms(scan, args.runs)
        rows = [["full scan of the trail (baseline)", f"{args.rows:,}", f"{base:.1f}", "1.00x"]]
        worst = 0.0
        for name, values in cases:
            filters, errors = query.parse_filters(values, now=now)
            assert not errors, errors
            found = query.search(db, filters, limit=50)[1]
            ms = median_ms(lambda f=filters: query.search(db, f, limit=50), args.runs)
            worst = max(worst, ms)
            rows.append([f"search: {name}", f"{found:,}", f"{ms:.1f}", f"{ms / base:.2f}x"])
        filters, _ = query.parse_filters({"sender": "kunde7.de"}, now=now)
        matches = query.search(db, filters, limit=1)[1]
        csv_ms = median_ms(lambda: sum(len(x) for x in export.lines(query.each(db, filters))), max(3, args.runs // 3))
        rows.append([f"CSV export of a search ({matches:,} rows)", f"{matches:,}", f"{csv_ms:.1f}",
                     f"{csv_ms / base:.2f}x"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(machine.header("SmartPop mail trail search", {}, sys.executable))
    print(f"{args.rows:,} trail rows ({filled:.1f} s to fill), page of 50 + total count as the Trail page asks; "
          f"median of {args.runs} runs, ms; ratio = / full scan of the same table\n")
    print(table(["what", "matches", "ms", "ratio"], rows))
    print(f"\nslowest search: **{worst:.0f} ms**; target < 1000 ms: **{'met' if worst < 1000 else 'NOT met'}**")
    return 0


if __name__ == "__main__":
    sys.exit(main())
