"""The state store's file: its tables, and opening it with durable settings (DATA/state.sqlite3).

Tables:
- messages: one row per server message (account, folder, uidvalidity, uid); state
  'pending' until every recipient is placed, then 'done'.
- copies: one row per (message, recipient): 'sending' (written just before the DATA dot),
  'delivered' (MailPlus answered 250), or 'doubt' (the dot may have gone out, but no 250 was
  recorded: the reply was lost or the process died). A copy in doubt is not placed: it is
  sent again with an X-SmartPop-Redelivered header.
- ledger: (message digest, recipient) pairs already delivered, across accounts, so a
  second multidrop copy of one message is not delivered twice.
- account_status: the per-account figures `status` shows.
- trail, trail_copies: what happened to each message and each of its copies, for the search
  (docs/TRAIL.md); written in the batch of the record that decides the outcome, pruned by age.

Rows are read by column name (`named_rows`, sqlite3.Row), never by position: a column added
later (ADDED_COLUMNS) or a reordered SELECT cannot shift what a reader takes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Set

from smartpop.collector.groupcommit import Statement
from smartpop.errors import StateError

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
    last_fallback INTEGER, running INTEGER NOT NULL DEFAULT 0, redelivered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS trail (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, account TEXT NOT NULL, folder TEXT NOT NULL DEFAULT '',
    uid TEXT NOT NULL, message_id TEXT NOT NULL DEFAULT '', sender TEXT NOT NULL DEFAULT '',
    from_addr TEXT NOT NULL DEFAULT '', subject TEXT, rule TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL, redelivered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS trail_at ON trail(at);
CREATE INDEX IF NOT EXISTS trail_account_at ON trail(account, at);
CREATE INDEX IF NOT EXISTS trail_message_id ON trail(message_id);
CREATE TABLE IF NOT EXISTS trail_copies (
    trail_id INTEGER NOT NULL, rcpt TEXT NOT NULL, placement TEXT NOT NULL, reply TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS trail_copies_trail ON trail_copies(trail_id);
"""
# Columns added after the first release; stores made before them get them on open.
ADDED_COLUMNS = (
    # Copies sent again, marked, after a hand-over ended in doubt (docs/COLLECTION.md).
    ("account_status", "redelivered", "INTEGER NOT NULL DEFAULT 0"),
    # The size the server listed (POP3 LIST, IMAP RFC822.SIZE) when the message was done: a done
    # uid listed with another size is a new message under a reused uid.
    ("messages", "listed_size", "INTEGER"),
    # How the daemon waits for this account's mail: 'idle' (IMAP IDLE is the schedule) or
    # 'polling: <why IDLE is not possible>'; NULL for accounts that poll by design.
    ("account_status", "push", "TEXT"),
)

# How long a connection waits for another one's write lock (the busy handler's timeout).
BUSY_TIMEOUT = 60.0


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create) the store with durable settings."""
    conn: Optional[sqlite3.Connection] = None
    try:
        # Shared by the threads of one run; Store serialises every use with a lock.
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        use_wal(conn)
        # FULL: every commit is fsynced, also in WAL mode (NORMAL would not be).
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        add_columns(conn)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()  # a daemon retrying every poll must not leak a descriptor per attempt
        raise StateError(f"state store {path} is unusable: {exc}") from exc
    try:
        # Only when needed: a chmod changes the inode even to the same mode (a disk write).
        if path.stat().st_mode & 0o777 != 0o600:
            path.chmod(0o600)
    except OSError:
        pass
    return conn


def use_wal(conn: sqlite3.Connection, timeout: float = BUSY_TIMEOUT) -> None:
    """PRAGMA journal_mode=WAL, waiting for another writer as every other statement does.

    Switching a store to WAL (a new file, the first open) reads its header and then writes it.
    A connection that holds a read lock and asks for the write lock gets SQLITE_BUSY at once:
    SQLite skips the busy handler there (waiting could deadlock), so sqlite3.connect(timeout=)
    does not apply. The accounts of one pass open a new store at the same moment, and one of
    them failed its run with "database is locked". Retrying the whole statement is safe: it
    holds no lock once it failed, and once the store is in WAL mode the pragma only reads.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True for SQLITE_BUSY ("database is locked"), with or without an extended code."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; 3.8 only has the message
    if isinstance(code, int):
        return code & 0xFF == 5  # SQLITE_BUSY
    return str(exc) == "database is locked"


def add_columns(conn: sqlite3.Connection) -> None:
    """Add the ADDED_COLUMNS a store made by an older version lacks."""
    for table, column, kind in ADDED_COLUMNS:
        if column in columns_of(conn, table):
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError:
            # Another process opening the store at the same moment may have added it first.
            if column not in columns_of(conn, table):
                raise


def named_rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> List[sqlite3.Row]:
    """The rows of a query, each readable by column name (the connection's own rows stay tuples)."""
    cursor = conn.cursor()
    # typeshed wants a factory taking (Cursor, Row); sqlite3.Row itself is the documented one.
    cursor.row_factory = sqlite3.Row  # type: ignore[assignment]
    return cursor.execute(sql, args).fetchall()


def columns_of(conn: sqlite3.Connection, table: str) -> Set[str]:
    """The names of `table`'s columns (a store made by an older version lacks some)."""
    return {row["name"] for row in named_rows(conn, f"PRAGMA table_info({table})")}


def run_batch(conn: sqlite3.Connection, batch: Sequence[Statement]) -> None:
    """Run `batch` in one transaction on `conn` (autocommit mode): all of it is committed, or none."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, args, many in batch:
            if many:
                if not args:
                    continue  # e.g. no refused or doubtful copy: most finish_sending lists are empty
                conn.executemany(sql, args)
            else:
                conn.execute(sql, args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
