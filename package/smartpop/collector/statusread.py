"""The per-account status as `status` and the UI read it, and the status writes made outside a run.

Reads use the read-only connections the process's StateHub keeps open (opening one is a
write); the writes (quiet runs' times on stop and hourly, how the daemon waits for mail) open
a connection of their own, as they happen at most hourly or when something changes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from smartpop.collector.statedb import columns_of, connect, named_rows
from smartpop.collector.statehub import HUB, StateHub, Work
from smartpop.fsutil import lock_held, lock_path
from smartpop.paths import Paths

_STATUS_QUERY = ("SELECT account, last_run, last_success, collected, fallback, last_error, waiting, last_collected,"
                 " last_fallback, redelivered, push FROM account_status")
# Columns a store the running service has not migrated yet may lack: read as NULL.
_NEWER_COLUMNS = ("redelivered", "push")


def _iso(stamp: Optional[float]) -> Optional[str]:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _status_rows(conn: sqlite3.Connection) -> List[sqlite3.Row]:
    """The account_status rows as _STATUS_QUERY selects them (older stores: NULL for new columns)."""
    columns = columns_of(conn, "account_status")
    query = _STATUS_QUERY
    for column in _NEWER_COLUMNS:
        if column not in columns:
            query = query.replace(column, f"NULL AS {column}")
    return named_rows(conn, query)


def read_kept(db: Path, work: Work, hub: StateHub = HUB) -> List[Any]:
    """Run `work` on a read-only connection kept open for `db` (reads that repeat, such as the overview's)."""
    return hub.readers.read(db, work)


def read_account_status(paths: Paths, hub: StateHub = HUB) -> Dict[str, Dict[str, Any]]:
    """Per-account status for `status` and the UI; empty when nothing ran yet. Never raises.

    In the daemon's process the times of quiet runs (kept in memory, hub.liveness) are included;
    another process sees them once they are written (on change, hourly, on stop).
    """
    try:
        rows = hub.readers.read(paths.state_db, _status_rows)
    except (OSError, sqlite3.Error):
        return {}
    result: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        account = row["account"]
        last_run, last_success = row["last_run"], row["last_success"]
        held = hub.liveness.get(paths.state_db, account)
        if held is not None:
            last_run = max(last_run or 0, held[0])
            last_success = max(last_success or 0, held[1] or 0) or None
        result[account] = {
            "last_run": _iso(last_run), "last_success": _iso(last_success), "collected": row["collected"],
            "fallback": row["fallback"], "last_error": row["last_error"], "waiting": row["waiting"],
            "last_collected": row["last_collected"], "last_fallback": row["last_fallback"],
            "running": lock_held(lock_path(paths, account)), "redelivered": row["redelivered"] or 0,
            "push": row["push"],
        }
    return result


def flush_liveness(paths: Paths, hub: StateHub = HUB) -> int:
    """Write the quiet runs' times the hub holds for this data dir (on stop); returns how many accounts."""
    held = hub.liveness.take(paths.state_db)
    if not held or not paths.state_db.exists():
        return 0
    conn = connect(paths.state_db)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE account_status SET last_run=MAX(COALESCE(last_run, 0), ?),"
                             " last_success=NULLIF(MAX(COALESCE(last_success, 0), COALESCE(?, 0)), 0) WHERE account=?",
                             [(run, success, account) for account, (run, success) in held.items()])
    finally:
        conn.close()
    return len(held)


def set_push(paths: Paths, account: str, push: Optional[str]) -> None:
    """Record how the daemon waits for `account`'s mail (call only when it changes)."""
    conn = connect(paths.state_db)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO account_status (account, push) VALUES (?, ?)"
                         " ON CONFLICT (account) DO UPDATE SET push=excluded.push", (account, push))
    finally:
        conn.close()
