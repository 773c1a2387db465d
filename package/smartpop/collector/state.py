"""The collection state in SQLite (DATA/state.sqlite3): what was seen, delivered, and the status.

Every write that precedes an irreversible step (the SMTP dot, DELE/EXPUNGE) is its own
committed transaction with synchronous=FULL, so it is on disk before the step happens.

Tables:
- messages: one row per server message (account, folder, uidvalidity, uid); state
  'pending' until every recipient is placed, then 'done'.
- copies: one row per (message, recipient): 'sending' (written just before the DATA dot),
  'delivered', or 'doubt' (the dot went out, the reply was lost, the process died).
- ledger: (message digest, recipient) pairs already delivered, across accounts, so a
  second multidrop copy of one message is not delivered twice.
- account_status: the per-account figures `status` shows.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set

from smartpop.errors import StateError
from smartpop.paths import Paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity TEXT NOT NULL, uid TEXT NOT NULL,
    state TEXT NOT NULL, first_seen REAL NOT NULL, done_at REAL, message_id TEXT, digest TEXT,
    size INTEGER, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL, last_error TEXT, on_server INTEGER DEFAULT 1,
    PRIMARY KEY (account, folder, uidvalidity, uid));
CREATE TABLE IF NOT EXISTS copies (
    account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity TEXT NOT NULL, uid TEXT NOT NULL,
    rcpt TEXT NOT NULL, status TEXT NOT NULL, via TEXT NOT NULL, reply TEXT, at REAL NOT NULL,
    spool TEXT, digest TEXT,
    PRIMARY KEY (account, folder, uidvalidity, uid, rcpt));
CREATE TABLE IF NOT EXISTS ledger (
    digest TEXT NOT NULL, rcpt TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (digest, rcpt));
CREATE TABLE IF NOT EXISTS account_status (
    account TEXT PRIMARY KEY, last_run REAL, last_success REAL, collected INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0, last_error TEXT, waiting INTEGER, last_collected INTEGER,
    last_fallback INTEGER, running INTEGER NOT NULL DEFAULT 0);
"""

LEDGER_DAYS = 180
VANISHED_DAYS = 30


class Key(NamedTuple):
    """Identity of one message on the server."""

    account: str
    folder: str
    uidvalidity: str
    uid: str


class MessageRow(NamedTuple):
    """What the store knows about one server message."""

    state: str
    first_seen: float
    done_at: Optional[float]
    next_try: Optional[float]
    attempts: int


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create) the store with durable settings."""
    try:
        conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsynced, also in WAL mode (NORMAL would not be).
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state store {path} is unusable: {exc}") from exc
    try:
        path.chmod(0o600)
    except OSError:
        pass
    return conn


class Store:
    """Typed access to the state tables for one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(sql, args)

    # --- messages -----------------------------------------------------------------------
    def message(self, key: Key) -> Optional[MessageRow]:
        """The row of `key`, or None if never seen."""
        row = self.conn.execute(
            "SELECT state, first_seen, done_at, next_try, attempts FROM messages "
            "WHERE account=? AND folder=? AND uidvalidity=? AND uid=?", key).fetchone()
        return MessageRow(*row) if row else None

    def messages_of(self, account: str, folder: str, uidvalidity: str) -> Dict[str, MessageRow]:
        """All rows of one mailbox generation, by uid (one query instead of one per message)."""
        rows = self.conn.execute(
            "SELECT uid, state, first_seen, done_at, next_try, attempts FROM messages "
            "WHERE account=? AND folder=? AND uidvalidity=?", (account, folder, uidvalidity)).fetchall()
        return {r[0]: MessageRow(*r[1:]) for r in rows}

    def note_attempt(self, key: Key, message_id: str, digest: str, size: int, error: Optional[str],
                     retry_after: float) -> None:
        """Record a retrieval whose message is not (yet) fully placed."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, message_id, digest, size,"
                " attempts, next_try, last_error) VALUES (?,?,?,?, 'pending', ?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT (account, folder, uidvalidity, uid) DO UPDATE SET attempts=attempts+1,"
                " next_try=excluded.next_try, last_error=excluded.last_error, message_id=excluded.message_id,"
                " digest=excluded.digest, size=excluded.size",
                (*key, now, message_id, digest, size, now + retry_after, error))

    def mark_done(self, key: Key, message_id: str, digest: str, size: int) -> None:
        """Every recipient is placed: the message may now be deleted on the server."""
        now = time.time()
        self._write(
            "INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, done_at, message_id, digest,"
            " size) VALUES (?,?,?,?, 'done', ?, ?, ?, ?, ?) ON CONFLICT (account, folder, uidvalidity, uid) DO UPDATE"
            " SET state='done', done_at=excluded.done_at, last_error=NULL, next_try=NULL",
            (*key, now, now, message_id, digest, size))

    def backdate_done(self, account: str, seconds: float) -> None:
        """Move every done_at of `account` into the past (for tests of delete_after_days)."""
        self._write("UPDATE messages SET done_at = done_at - ? WHERE account=? AND done_at IS NOT NULL",
                    (seconds, account))

    def prune(self, account: str, folder: str, uidvalidity: str, present: Set[str]) -> None:
        """Forget rows of messages gone from the server for a while, and old ledger entries."""
        now = time.time()
        rows = self.conn.execute("SELECT uid, on_server FROM messages WHERE account=? AND folder=? AND uidvalidity=?",
                                 (account, folder, uidvalidity)).fetchall()
        gone = [uid for uid, on_server in rows if uid not in present and on_server]
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("UPDATE messages SET on_server=0, done_at=COALESCE(done_at, ?) "
                                  "WHERE account=? AND folder=? AND uidvalidity=? AND uid=?",
                                  [(now, account, folder, uidvalidity, uid) for uid in gone])
            self.conn.execute("DELETE FROM messages WHERE account=? AND on_server=0 AND state='done' AND done_at < ?",
                              (account, now - VANISHED_DAYS * 86400))
            self.conn.execute("DELETE FROM copies WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE"
                              " m.account=copies.account AND m.folder=copies.folder AND"
                              " m.uidvalidity=copies.uidvalidity AND m.uid=copies.uid) AND at < ?",
                              (now - VANISHED_DAYS * 86400,))
            self.conn.execute("DELETE FROM ledger WHERE at < ?", (now - LEDGER_DAYS * 86400,))

    # --- copies and the ledger ----------------------------------------------------------
    def placed(self, key: Key) -> Dict[str, str]:
        """Recipients of `key` already handed over: rcpt -> status."""
        rows = self.conn.execute("SELECT rcpt, status FROM copies WHERE account=? AND folder=? AND uidvalidity=?"
                                 " AND uid=? AND status IN ('delivered', 'doubt')", key).fetchall()
        return dict(rows)

    def in_ledger(self, digest: str, rcpts: Sequence[str]) -> Set[str]:
        """Which of `rcpts` already received the message with `digest` (any account)."""
        found = set()
        for rcpt in rcpts:
            if self.conn.execute("SELECT 1 FROM ledger WHERE digest=? AND rcpt=?", (digest, rcpt)).fetchone():
                found.add(rcpt)
        return found

    def begin_sending(self, key: Key, rcpts: Sequence[str], via: str, spool: str, digest: str) -> None:
        """Durably note, right before the DATA dot, which copies are about to be handed over."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO copies (account, folder, uidvalidity, uid, rcpt, status, via, at, spool,"
                " digest) VALUES (?,?,?,?,?, 'sending', ?, ?, ?, ?)",
                [(*key, r, via, now, spool, digest) for r in rcpts])

    def finish_sending(self, key: Key, delivered: Dict[str, str], failed: Sequence[str], digest: str,
                       ledger_rcpts: Sequence[str], status: str = "delivered") -> None:
        """After the DATA reply: record delivered copies (and the ledger); clear the failed intents."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for rcpt, reply in delivered.items():
                self.conn.execute("UPDATE copies SET status=?, reply=?, at=? WHERE account=? AND folder=? AND"
                                  " uidvalidity=? AND uid=? AND rcpt=?", (status, reply, now, *key, rcpt))
            for rcpt in failed:
                self.conn.execute("DELETE FROM copies WHERE account=? AND folder=? AND uidvalidity=? AND uid=?"
                                  " AND rcpt=? AND status='sending'", (*key, rcpt))
            self.conn.executemany("INSERT OR IGNORE INTO ledger (digest, rcpt, at) VALUES (?,?,?)",
                                  [(digest, r, now) for r in ledger_rcpts])

    def record_duplicate(self, key: Key, rcpts: Sequence[str]) -> None:
        """Note recipients skipped because another copy of the message already reached them."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO copies (account, folder, uidvalidity, uid, rcpt, status, via, at)"
                " VALUES (?,?,?,?,?, 'delivered', 'duplicate', ?)", [(*key, r, now) for r in rcpts])

    def in_flight(self, account: str) -> List[Dict[str, Any]]:
        """Copies left in 'sending' by a process that died between the dot and the record."""
        rows = self.conn.execute("SELECT folder, uidvalidity, uid, rcpt, spool, digest FROM copies WHERE account=?"
                                 " AND status='sending'", (account,)).fetchall()
        return [dict(zip(("folder", "uidvalidity", "uid", "rcpt", "spool", "digest"), r)) for r in rows]

    def resolve_in_flight(self, account: str) -> None:
        """Treat every 'sending' copy as handed over (status 'doubt', kept in the ledger)."""
        now = time.time()
        rows = self.in_flight(account)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for row in rows:
                self.conn.execute("UPDATE copies SET status='doubt', at=? WHERE account=? AND folder=? AND"
                                  " uidvalidity=? AND uid=? AND rcpt=?",
                                  (now, account, row["folder"], row["uidvalidity"], row["uid"], row["rcpt"]))
                if row["digest"]:
                    self.conn.execute("INSERT OR IGNORE INTO ledger (digest, rcpt, at) VALUES (?,?,?)",
                                      (row["digest"], row["rcpt"], now))

    # --- status -------------------------------------------------------------------------
    def run_started(self, account: str) -> None:
        """Mark the start of a run."""
        self._write("INSERT INTO account_status (account, last_run, running) VALUES (?, ?, 1) "
                    "ON CONFLICT (account) DO UPDATE SET last_run=excluded.last_run, running=1",
                    (account, time.time()))

    def run_finished(self, account: str, ok: bool, collected: int, fallback: int, error: Optional[str],
                     waiting: Optional[int]) -> None:
        """Store the outcome of a run."""
        now = time.time()
        self._write(
            "INSERT INTO account_status (account, last_run, last_success, collected, fallback, last_error, waiting,"
            " last_collected, last_fallback, running) VALUES (?,?,?,?,?,?,?,?,?,0) ON CONFLICT (account) DO UPDATE SET"
            " last_success=COALESCE(excluded.last_success, last_success), collected=collected+excluded.collected,"
            " fallback=fallback+excluded.fallback, last_error=excluded.last_error,"
            " waiting=COALESCE(excluded.waiting, waiting), last_collected=excluded.last_collected,"
            " last_fallback=excluded.last_fallback, running=0",
            (account, now, now if ok else None, collected, fallback, error, waiting, collected, fallback))


def lock_path(paths: Paths, account: str) -> Path:
    """The per-account lock file (one runner per mailbox, daemon or `fetch`)."""
    return paths.locks / f"account.{account}.lock"


def lock_held(path: Path) -> bool:
    """True if some process holds the lock file now (a killed run leaves running=1 behind)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock we may just have taken
    return False


def _iso(stamp: Optional[float]) -> Optional[str]:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def read_account_status(paths: Paths) -> Dict[str, Dict[str, Any]]:
    """Per-account status for `status` and the UI; empty when nothing ran yet. Never raises."""
    if not paths.state_db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{paths.state_db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT account, last_run, last_success, collected, fallback, last_error, waiting,"
                                " last_collected, last_fallback, running FROM account_status").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    result: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        result[row[0]] = {
            "last_run": _iso(row[1]), "last_success": _iso(row[2]), "collected": row[3], "fallback": row[4],
            "last_error": row[5], "waiting": row[6], "last_collected": row[7], "last_fallback": row[8],
            "running": bool(row[9]) and lock_held(lock_path(paths, row[0])),
        }
    return result
