"""bench/profcats.py: a profile's own time summed per concern, from a real cProfile run."""

from __future__ import annotations

import cProfile
import io
import logging
import pstats
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import profcats  # noqa: E402


def test_concern_of_names_what_each_file_owns() -> None:
    """Functions map to the concern that the issue asks about, builtins included."""
    assert profcats.concern_of("/x/smartpop/collector/headers.py:102(parse_fields)").startswith("headers")
    assert profcats.concern_of("/x/smartpop/collector/placer.py:1(place)").startswith("run loop")
    assert profcats.concern_of("<method 'execute' of 'sqlite3.Connection' objects>").startswith("state and trail")
    assert profcats.concern_of("/x/smartpop/trail/record.py:111(statements)").startswith("state and trail")
    assert profcats.concern_of("/x/smartpop/collector/groupcommit.py:60(enqueue)").startswith("state and trail")
    assert profcats.concern_of("/x/smartpop/collector/statedb.py:160(run_batch)").startswith("state and trail")
    assert profcats.concern_of("<method 'read' of '_ssl._SSLSocket' objects>") == "TLS (OpenSSL calls)"
    assert profcats.concern_of("/usr/lib/python3.11/logging/__init__.py:1(emit)") == "logging"
    assert profcats.concern_of("<method 'acquire' of '_thread.lock' objects>") == "threads and locks"
    assert profcats.concern_of("/x/smartpop/collector/recipients.py:139(safe_reason)") == "routing and address checks"
    assert profcats.concern_of("/x/smartpop/collector/pop3.py:185(_body)").startswith("POP3")
    assert profcats.concern_of("<method 'sendall' of '_socket.socket' objects>").startswith("SMTP")
    assert profcats.concern_of("/x/something/else.py:1(f)") == "other"


def test_by_concern_sums_a_real_profile(tmp_path: Path) -> None:
    """SQLite and logging work done under cProfile lands in those two rows, and the table adds up."""
    # A logger of its own: whatever handlers other tests left on the root logger stay out of it.
    logger = logging.getLogger("profcats-test")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [logging.StreamHandler(io.StringIO())]
    conn = sqlite3.connect(str(tmp_path / "x.sqlite3"))
    conn.execute("CREATE TABLE t (a INTEGER)")
    profile = cProfile.Profile()
    profile.enable()
    for n in range(3000):
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        logger.warning("row %d", n)
    conn.commit()
    profile.disable()
    totals = profcats.by_concern(pstats.Stats(profile))
    sqlite_row = "state and trail (SQLite, group commit)"
    assert totals[sqlite_row] > 0 and totals["logging"] > 0
    assert totals[sqlite_row] + totals["logging"] > 0.5 * sum(totals.values())
    rows = profcats.table(totals, unprofiled_cpu=2.0)
    assert rows[0].startswith("| concern") and len(rows) == 2 + len(profcats.CONCERNS) + 1
    shares = [float(r.split("|")[3].strip().rstrip(" %")) for r in rows[2:-1]]
    assert 98 <= sum(shares) <= 102
