"""Edits of the state store that only tests make (the collector itself never rewrites history)."""

from __future__ import annotations

from pathlib import Path

from smartpop.collector import statedb


def backdate_done(db: Path, account: str, seconds: float) -> None:
    """Move every done_at of `account` `seconds` into the past (for tests of delete_after_days)."""
    conn = statedb.connect(db)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE messages SET done_at = done_at - ? WHERE account=? AND done_at IS NOT NULL",
                         (seconds, account))
    finally:
        conn.close()
