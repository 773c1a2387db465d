"""Trail rows for chart tests: the trail table (schema of issue 16) in a state database, and filling it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Tuple

# The trail table as the trail store creates it (collector/statedb.py SCHEMA).
TRAIL_SCHEMA = """
CREATE TABLE IF NOT EXISTS trail (id INTEGER PRIMARY KEY, at REAL NOT NULL, account TEXT NOT NULL,
  folder TEXT NOT NULL DEFAULT '', uid TEXT NOT NULL, message_id TEXT NOT NULL DEFAULT '',
  sender TEXT NOT NULL DEFAULT '', from_addr TEXT NOT NULL DEFAULT '', subject TEXT,
  rule TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL, redelivered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS trail_at ON trail(at);
CREATE INDEX IF NOT EXISTS trail_account_at ON trail(account, at);
"""


def add_trail(db: Path, rows: Iterable[Tuple[float, str, str]]) -> None:
    """Create the trail table if needed and add (at, account, outcome) rows."""
    conn = sqlite3.connect(str(db))
    try:
        conn.executescript(TRAIL_SCHEMA)
        with conn:
            conn.executemany("INSERT INTO trail (at, account, uid, outcome) VALUES (?, ?, ?, ?)",
                             ((at, account, str(n), outcome) for n, (at, account, outcome) in enumerate(rows)))
    finally:
        conn.close()
