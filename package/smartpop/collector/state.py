"""The collection state in SQLite (DATA/state.sqlite3): what was seen, delivered, and the status.

Every write that precedes an irreversible step is committed with synchronous=FULL before
that step happens: the 'sending' journal entry before the SMTP dot, the 'done' record
before DELE / \\Deleted. Writes that guard nothing irreversible yet (a delivered copy, the
ledger, 'done') are queued and ride along with the next commit, which is at the latest
the one made before their message's deletion (runner: sync() before DELE). Concurrent
threads share commits (group commit): one fsync covers every write queued before it.

Why a queued write may be lost in a crash without harm: a copy left at 'sending' is
recovered as 'doubt', and a copy in doubt is delivered again, marked as a possible
duplicate (docs/COLLECTION.md, "Doubt"): MailPlus has a message only once it answered 250,
and a power cut takes Postfix down with SmartPop. A lost 'done' only means the message is
looked at again and found placed. The only price of a lost 'delivered' record is that
marked duplicate; nothing is ever taken for delivered without a recorded 250.

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
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from smartpop.errors import StateError
from smartpop.paths import Paths
from smartpop.trail import record as trail_record

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

LEDGER_DAYS = 180
VANISHED_DAYS = 30
# The age-based clean-up (ledger, long-gone messages) runs at most this often per account
# and process when nothing vanished from the server: a quiet poll then writes nothing.
PRUNE_EVERY = 3600.0
# Trail rows kept when the config does not say (trail.retention_days), and how many of the
# oldest rows one prune deletes at most: a small batch keeps the prune's commit short, and
# prunes follow every run that saw mail vanish from the server, so they keep up with the rate
# mail comes in.
TRAIL_DAYS = 30
TRAIL_PRUNE_BATCH = 2000
_last_prune: Dict[Tuple[str, str], float] = {}
# A run that changes nothing but its time ("last checked") writes it at most this often;
# between writes the time is kept in memory (Liveness), so an idle poll writes nothing.
FLUSH_EVERY = 3600.0


class Liveness:
    """When each account was last checked, for runs that changed nothing else (not on disk yet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: Dict[Tuple[str, str], Tuple[float, Optional[float]]] = {}

    def note(self, db: Path, account: str, last_run: float, last_success: Optional[float]) -> None:
        """Remember a quiet run's times (a success time survives a later failed run)."""
        with self._lock:
            previous = self._times.get((str(db), account))
            if last_success is None and previous is not None:
                last_success = previous[1]
            self._times[(str(db), account)] = (last_run, last_success)

    def get(self, db: Path, account: str) -> Optional[Tuple[float, Optional[float]]]:
        """The unwritten (last_run, last_success) of `account`, if any."""
        with self._lock:
            return self._times.get((str(db), account))

    def take(self, db: Path, account: Optional[str] = None) -> Dict[str, Tuple[float, Optional[float]]]:
        """Remove and return the unwritten times of one account (or all) of store `db`."""
        with self._lock:
            keys = [k for k in self._times if k[0] == str(db) and (account is None or k[1] == account)]
            return {k[1]: self._times.pop(k) for k in keys}


LIVENESS = Liveness()


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
    last_error: Optional[str] = None


class MailboxState(NamedTuple):
    """The store's rows of one mailbox generation, by uid, kept small for 100,000 kept messages.

    Of a done message a poll only needs when it was done (delete_after_days): a float per
    uid instead of a row object saves most of the memory of a poll that finds nothing new.
    """

    done: Dict[str, Optional[float]]  # uid -> done_at
    open: Dict[str, MessageRow]  # uid -> row, for messages not placed yet
    # uid -> size recorded when done, for done uids the server now lists with another size
    reused: Dict[str, int]


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
        if column in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError:
            # Another process opening the store at the same moment may have added it first.
            if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                raise


Statement = Tuple[str, Any, bool]  # sql, parameters, executemany?

# Digests with ledger rows queued (not yet committed) in some Store of this process: a
# duplicate check elsewhere must commit them first, or it would miss them.
_queued_digests: Dict[str, Set[Store]] = {}
_queued_lock = threading.Lock()


class Store:
    """Typed access to the state tables, shared by the threads of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self._conn_lock = threading.RLock()  # one user of the connection at a time
        # Reads use a second connection: in WAL mode they then never wait for a commit's fsync.
        self._reader = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
        self._reader_lock = threading.Lock()
        self._cv = threading.Condition()  # guards the queue and the commit sequence below
        self._queue: List[Statement] = []
        # The last write sequence number touching a message / a ledger digest, so a read that
        # depends on them commits exactly when it has to.
        self._key_seq: Dict[Key, int] = {}
        self._digest_seq: Dict[str, int] = {}
        # (seq, key, digest) of queued writes, oldest first: trimmed after each commit so the
        # maps above only hold what is not on disk yet (flat memory over 100,000 messages).
        self._marks: Deque[Tuple[int, Optional[Key], str]] = collections.deque()
        self._seq = 0  # writes queued so far
        self._committed = 0  # writes on disk so far
        self._committing = False
        self._broken: Optional[BaseException] = None
        self.commits = 0

    def close(self) -> None:
        """Commit what is queued and close the connection."""
        try:
            self.sync()
        finally:
            self._forget_digests()
            self._reader.close()
            self.conn.close()

    def shrink(self) -> None:
        """Give the page caches back (a kept store waits, maybe for an hour, for its next run)."""
        with self._conn_lock:
            self.conn.execute("PRAGMA shrink_memory")
        with self._reader_lock:
            self._reader.execute("PRAGMA shrink_memory")

    def _forget_digests(self) -> None:
        with _queued_lock:
            for digest in self._digest_seq:
                holders = _queued_digests.get(digest)
                if holders is not None:
                    holders.discard(self)
                    if not holders:
                        del _queued_digests[digest]
        self._digest_seq = {}

    def _enqueue(self, statements: Iterable[Statement], durable: bool, key: Optional[Key] = None,
                 digest: str = "") -> int:
        """Queue writes; with `durable`, return only once they (and all before them) are committed."""
        with self._cv:
            if self._broken is not None:
                raise StateError(f"state store {self.path} failed: {self._broken}")
            self._queue.extend(statements)
            self._seq += 1
            mine = self._seq
            if key is not None:
                self._key_seq[key] = mine
            if digest:
                if digest not in self._digest_seq:
                    with _queued_lock:
                        _queued_digests.setdefault(digest, set()).add(self)
                self._digest_seq[digest] = mine
            if key is not None or digest:
                self._marks.append((mine, key, digest))
        if durable:
            self._wait_committed(mine)
        return mine

    def sync(self) -> None:
        """Commit every queued write now (before an irreversible step that relies on them)."""
        with self._cv:
            if self._broken is not None:
                raise StateError(f"state store {self.path} failed: {self._broken}")
            target = self._seq
        self._wait_committed(target)

    def _wait_committed(self, target: int) -> None:
        """Group commit: one thread commits the whole queue, the others wait for its fsync."""
        with self._cv:
            while self._committed < target:
                if self._broken is not None:
                    raise StateError(f"state store {self.path} failed: {self._broken}")
                if self._committing:
                    self._cv.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                upto = self._seq
                self._cv.release()
                error: Optional[BaseException] = None
                try:
                    self._commit(batch)
                except BaseException as exc:  # recorded for every waiter, then re-raised below
                    error = exc
                finally:
                    self._cv.acquire()
                    self._committing = False
                    if error is None:
                        self._committed = upto
                        self._trim(upto)
                    else:
                        self._broken = error
                    self._cv.notify_all()
                if error is not None:
                    raise StateError(f"state store {self.path} failed: {error}") from error

    def _trim(self, upto: int) -> None:
        """Forget the marks of writes now on disk (called with self._cv held)."""
        while self._marks and self._marks[0][0] <= upto:
            seq, key, digest = self._marks.popleft()
            if key is not None and self._key_seq.get(key) == seq:
                del self._key_seq[key]
            if digest and self._digest_seq.get(digest) == seq:
                del self._digest_seq[digest]
                with _queued_lock:
                    holders = _queued_digests.get(digest)
                    if holders is not None:
                        holders.discard(self)
                        if not holders:
                            del _queued_digests[digest]

    def sync_upto(self, seq: int) -> None:
        """Commit at least up to the write numbered `seq`."""
        if seq > self._committed:
            self._wait_committed(seq)

    def _commit(self, batch: List[Statement]) -> None:
        if not batch:
            return
        with self._conn_lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for sql, args, many in batch:
                    if many:
                        if not args:
                            continue  # e.g. no refused or doubtful copy: most finish_sending lists are empty
                        self.conn.executemany(sql, args)
                    else:
                        self.conn.execute(sql, args)
                self.conn.execute("COMMIT")
                self.commits += 1
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Sequence[Any]) -> List[Any]:
        rows: List[Any] = []
        self._each(sql, args, rows.append)
        return rows

    def _each(self, sql: str, args: Sequence[Any], take: Callable[[Any], None]) -> None:
        """Hand every row of a query to `take`, one at a time (no list of all rows in memory)."""
        with self._reader_lock:
            try:
                for row in self._reader.execute(sql, args):
                    take(row)
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path} cannot be read: {exc}") from exc

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        self._enqueue([(sql, args, False)], durable=True)

    # --- messages -----------------------------------------------------------------------
    def message(self, key: Key) -> Optional[MessageRow]:
        """The row of `key`, or None if never seen."""
        self.sync_upto(self._key_seq.get(key, 0))
        rows = self._read("SELECT state, first_seen, done_at, next_try, attempts, last_error FROM messages "
                          "WHERE account=? AND folder=? AND uidvalidity=? AND uid=?", key)
        return MessageRow(*rows[0]) if rows else None

    def messages_of(self, account: str, folder: str, uidvalidity: str,
                    listed: Optional[Mapping[str, int]] = None) -> MailboxState:
        """What is known of one mailbox generation, by uid (one query instead of one per message).

        With `listed` (uid -> size the server lists now), a done uid whose recorded size differs
        goes to `reused` instead of `done`: the server gave a new message an old uid.
        """
        self.sync()
        known = MailboxState({}, {}, {})

        def take(row: Any) -> None:
            if row[1] == "done":
                if listed is not None and reused_uid(row[6], listed.get(row[0])):
                    known.reused[row[0]] = row[6]
                else:
                    known.done[row[0]] = row[3]
            else:
                known.open[row[0]] = MessageRow(row[1], row[2], row[3], row[4], row[5], row[7])

        self._each("SELECT uid, state, first_seen, done_at, next_try, attempts, listed_size, last_error FROM messages "
                   "WHERE account=? AND folder=? AND uidvalidity=?", (account, folder, uidvalidity), take)
        return known

    def note_attempt(self, key: Key, message_id: str, digest: str, size: int, error: Optional[str],
                     retry_after: float, trail: Optional[trail_record.TrailEntry] = None) -> None:
        """Record a retrieval whose message is not (yet) fully placed (with its trail row, if given)."""
        now = time.time()
        self._enqueue(self._with_trail(key, trail, now, [(
            "INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, message_id, digest, size,"
            " attempts, next_try, last_error) VALUES (?,?,?,?, 'pending', ?, ?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (account, folder, uidvalidity, uid) DO UPDATE SET attempts=attempts+1,"
            " next_try=excluded.next_try, last_error=excluded.last_error, message_id=excluded.message_id,"
            " digest=excluded.digest, size=excluded.size",
            (*key, now, message_id, digest, size, now + retry_after, error), False)]), durable=True, key=key)

    @staticmethod
    def _with_trail(key: Key, trail: Optional[trail_record.TrailEntry], now: float,
                    statements: List[Statement]) -> List[Statement]:
        """`statements` plus the trail row of the same message: one batch, one commit, no fsync of its own."""
        if trail is not None:
            statements += trail_record.statements(key.account, key.folder, key.uid, trail, now)
        return statements

    def mark_done(self, key: Key, message_id: str, digest: str, size: int, listed_size: Optional[int] = None,
                  fallback: bool = False, trail: Optional[trail_record.TrailEntry] = None) -> int:
        """Every recipient is placed: queued; returns its number for is_durable() / sync_upto().

        The account's 'collected' (and 'fallback') figures and the trail row ride in the same
        commit, so after a crash they count and show exactly the messages whose records survived.
        """
        now = time.time()
        return self._enqueue(self._with_trail(key, trail, now, [
            ("INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, done_at, message_id, digest,"
             " size, listed_size) VALUES (?,?,?,?, 'done', ?, ?, ?, ?, ?, ?) ON CONFLICT (account, folder, uidvalidity,"
             " uid) DO UPDATE SET state='done', done_at=excluded.done_at, last_error=NULL, next_try=NULL,"
             " listed_size=excluded.listed_size",
             (*key, now, now, message_id, digest, size, listed_size), False),
            ("INSERT INTO account_status (account, collected, fallback) VALUES (?, 1, ?) ON CONFLICT (account)"
             " DO UPDATE SET collected=collected+1, fallback=fallback+excluded.fallback",
             (key.account, 1 if fallback else 0), False),
        ]), durable=False, key=key)

    def set_aside(self, key: Key) -> None:
        """Rename the records of the message that had `key` before the server reused its uid (durable).

        The new message then starts with no journal, so nothing recorded for the old one can
        make it skip a recipient. The renamed rows are pruned like those of any vanished message.
        """
        # A blank cannot occur in a POP3 UIDL or an IMAP UID, so the new name is nobody's uid.
        renamed = f"{key.uid} (reused {time.time():.6f})"
        self._enqueue([
            ("UPDATE messages SET uid=? WHERE account=? AND folder=? AND uidvalidity=? AND uid=?", (renamed, *key),
             False),
            ("UPDATE copies SET uid=? WHERE account=? AND folder=? AND uidvalidity=? AND uid=?", (renamed, *key),
             False)], durable=True, key=key)

    def backdate_done(self, account: str, seconds: float) -> None:
        """Move every done_at of `account` into the past (for tests of delete_after_days)."""
        self._write("UPDATE messages SET done_at = done_at - ? WHERE account=? AND done_at IS NOT NULL",
                    (seconds, account))

    def prune(self, account: str, folder: str, uidvalidity: str, present: Set[str],
              trail_days: float = TRAIL_DAYS) -> None:
        """Forget rows of messages gone from the server for a while, old ledger entries and old trail rows."""
        now = time.time()
        self.sync()
        gone: List[str] = []

        def take(row: Any) -> None:
            if row[0] not in present:
                gone.append(row[0])

        self._each("SELECT uid FROM messages WHERE account=? AND folder=? AND uidvalidity=? AND on_server",
                   (account, folder, uidvalidity), take)
        if not gone and self._pruned_recently(account, now):
            return  # nothing vanished, and the age-based clean-up ran less than an hour ago
        self._enqueue([
            ("UPDATE messages SET on_server=0, done_at=COALESCE(done_at, ?) "
             "WHERE account=? AND folder=? AND uidvalidity=? AND uid=?",
             [(now, account, folder, uidvalidity, uid) for uid in gone], True),
            ("DELETE FROM messages WHERE account=? AND on_server=0 AND state='done' AND done_at < ?",
             (account, now - VANISHED_DAYS * 86400), False),
            ("DELETE FROM copies WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE"
             " m.account=copies.account AND m.folder=copies.folder AND"
             " m.uidvalidity=copies.uidvalidity AND m.uid=copies.uid) AND at < ?",
             (now - VANISHED_DAYS * 86400,), False),
            ("DELETE FROM ledger WHERE at < ?", (now - LEDGER_DAYS * 86400,), False),
            # A batch of the oldest, on this commit that happens anyway (never a commit of its own).
            *trail_record.prune_statements(now - trail_days * 86400, TRAIL_PRUNE_BATCH),
        ], durable=True)
        _last_prune[(str(self.path), account)] = now

    def _pruned_recently(self, account: str, now: float) -> bool:
        last = _last_prune.get((str(self.path), account))
        return last is not None and now - last < PRUNE_EVERY

    # --- copies and the ledger ----------------------------------------------------------
    def placed(self, key: Key) -> Dict[str, str]:
        """Recipients of `key` that MailPlus took (a recorded 250): rcpt -> status."""
        self.sync_upto(self._key_seq.get(key, 0))
        rows = self._read("SELECT rcpt, status FROM copies WHERE account=? AND folder=? AND uidvalidity=?"
                          " AND uid=? AND status='delivered'", key)
        return dict(rows)

    def in_doubt(self, key: Key) -> Set[str]:
        """Recipients of `key` whose hand-over was interrupted: sent again, marked as a possible duplicate."""
        self.sync_upto(self._key_seq.get(key, 0))
        rows = self._read("SELECT rcpt FROM copies WHERE account=? AND folder=? AND uidvalidity=?"
                          " AND uid=? AND status='doubt'", key)
        return {row[0] for row in rows}

    def in_ledger(self, digest: str, rcpts: Sequence[str]) -> Set[str]:
        """Which of `rcpts` already received the message with `digest` (any account of this process)."""
        if not digest:
            return set()  # a message without identity is never a copy of another
        with _queued_lock:
            holders = list(_queued_digests.get(digest, ()))
        for store in holders:  # ledger rows of this digest still queued somewhere: commit them first
            store.sync_upto(store._digest_seq.get(digest, 0))
        if not rcpts:
            return set()
        known = {row[0] for row in self._read("SELECT rcpt FROM ledger WHERE digest=?", (digest,))}
        return {rcpt for rcpt in rcpts if rcpt in known}

    def uids_with_copies(self, account: str, folder: str, uidvalidity: str) -> Set[str]:
        """Messages of one mailbox generation with any journal entry (the others have nothing placed)."""
        self.sync()
        rows = self._read("SELECT DISTINCT uid FROM copies WHERE account=? AND folder=? AND uidvalidity=?",
                          (account, folder, uidvalidity))
        return {row[0] for row in rows}

    def is_durable(self, seq: int) -> bool:
        """True once the write numbered `seq` (as returned by mark_done) is committed."""
        return seq <= self._committed

    def begin_sending(self, key: Key, rcpts: Sequence[str], via: str, spool: str, digest: str) -> None:
        """Durably note, right before the DATA dot, which copies are about to be handed over."""
        now = time.time()
        self._enqueue([(
            "INSERT OR REPLACE INTO copies (account, folder, uidvalidity, uid, rcpt, status, via, at, spool,"
            " digest) VALUES (?,?,?,?,?, 'sending', ?, ?, ?, ?)",
            [(*key, r, via, now, spool, digest) for r in rcpts], True)], durable=True, key=key)

    def finish_sending(self, key: Key, delivered: Dict[str, str], failed: Sequence[str], digest: str,
                       ledger_rcpts: Sequence[str], doubt: Sequence[str] = (), redelivered: bool = False) -> None:
        """After the DATA reply: record delivered copies (and the ledger), clear failed intents, note doubt.

        Delivered copies are queued (a crash before their commit leaves them 'sending', which
        is recovered as doubt and sent again, marked). Clearing a refused copy and noting a
        copy in doubt (dot sent, no reply) are committed at once, so the next attempt knows.
        """
        now = time.time()
        statements: List[Statement] = [
            ("UPDATE copies SET status='delivered', reply=?, at=? WHERE account=? AND folder=? AND uidvalidity=?"
             " AND uid=? AND rcpt=?", [(reply, now, *key, rcpt) for rcpt, reply in delivered.items()], True),
            ("DELETE FROM copies WHERE account=? AND folder=? AND uidvalidity=? AND uid=?"
             " AND rcpt=? AND status='sending'", [(*key, rcpt) for rcpt in failed], True),
            ("UPDATE copies SET status='doubt', at=? WHERE account=? AND folder=? AND uidvalidity=? AND uid=?"
             " AND rcpt=?", [(now, *key, rcpt) for rcpt in doubt], True),
            ("INSERT OR IGNORE INTO ledger (digest, rcpt, at) VALUES (?,?,?)",
             [(digest, r, now) for r in ledger_rcpts if digest], True),
        ]
        if redelivered and delivered:
            statements.append(("UPDATE account_status SET redelivered=redelivered+? WHERE account=?",
                               (len(delivered), key.account), False))
        self._enqueue(statements, durable=bool(failed) or bool(doubt), key=key,
                      digest=digest if ledger_rcpts else "")

    def record_duplicate(self, key: Key, rcpts: Sequence[str]) -> None:
        """Note recipients skipped because another copy of the message already reached them."""
        now = time.time()
        # Queued: if lost, the next run finds the same ledger rows again and decides the same.
        self._enqueue([(
            "INSERT OR REPLACE INTO copies (account, folder, uidvalidity, uid, rcpt, status, via, at)"
            " VALUES (?,?,?,?,?, 'delivered', 'duplicate', ?)", [(*key, r, now) for r in rcpts], True)],
            durable=False, key=key)

    def in_flight(self, account: str) -> List[Dict[str, Any]]:
        """Copies left in 'sending' by a process that died between its durable note and the record."""
        self.sync()
        rows = self._read("SELECT folder, uidvalidity, uid, rcpt, spool, digest FROM copies WHERE account=?"
                          " AND status='sending'", (account,))
        return [dict(zip(("folder", "uidvalidity", "uid", "rcpt", "spool", "digest"), r)) for r in rows]

    def resolve_in_flight(self, account: str) -> None:
        """Every 'sending' copy becomes 'doubt': not placed, sent again and marked (never assumed delivered)."""
        now = time.time()
        rows = self.in_flight(account)
        self._enqueue([
            ("UPDATE copies SET status='doubt', at=? WHERE account=? AND folder=? AND uidvalidity=? AND uid=?"
             " AND rcpt=? AND status='sending'",
             [(now, account, r["folder"], r["uidvalidity"], r["uid"], r["rcpt"]) for r in rows], True),
        ], durable=True)

    # --- status -------------------------------------------------------------------------
    def run_started(self, account: str) -> None:
        """Make sure `account` has a status row (whether it runs is told by its lock, not by a write)."""
        if not self._read("SELECT 1 FROM account_status WHERE account=?", (account,)):
            self._write("INSERT OR IGNORE INTO account_status (account, last_run) VALUES (?, ?)",
                        (account, time.time()))

    def run_finished(self, account: str, ok: bool, collected: int, fallback: int, error: Optional[str],
                     waiting: Optional[int]) -> str:
        """Store the outcome of a run: 'changed', 'flushed' (only the time, hourly) or 'quiet' (in memory).

        The totals are counted by mark_done, with the records. A run that found what the last
        one found writes nothing but once per FLUSH_EVERY, so an idle poll leaves the disk alone.
        """
        now = time.time()
        rows = self._read("SELECT last_run, last_success, last_error, waiting, last_collected, last_fallback"
                          " FROM account_status WHERE account=?", (account,))
        if rows:
            last_run, last_success, last_error, last_waiting, last_collected, last_fallback = rows[0]
            same = (last_error == error and (waiting is None or last_waiting == waiting)
                    and (last_collected or 0) == collected and (last_fallback or 0) == fallback
                    and (not ok or last_success is not None))
            if same and last_run is not None and now - last_run < FLUSH_EVERY:
                LIVENESS.note(self.path, account, now, now if ok else None)
                return "quiet"
        else:
            same = False
        held = LIVENESS.take(self.path, account).get(account)
        success = now if ok else (held[1] if held else None)
        self._write(
            "INSERT INTO account_status (account, last_run, last_success, last_error, waiting,"
            " last_collected, last_fallback, running) VALUES (?,?,?,?,?,?,?,0) ON CONFLICT (account) DO UPDATE SET"
            " last_success=NULLIF(MAX(COALESCE(excluded.last_success, 0), COALESCE(last_success, 0)), 0),"
            " last_error=excluded.last_error, waiting=COALESCE(excluded.waiting, waiting),"
            " last_collected=excluded.last_collected, last_fallback=excluded.last_fallback, running=0",
            (account, now, success, error, waiting, collected, fallback))
        return "flushed" if same else "changed"


class StorePool:
    """Stores kept open between the runs of one process (the daemon), so a quiet poll writes nothing.

    Opening a store is a disk write: SQLite running as root chowns the WAL file it opens, and
    the last connection to close checkpoints the WAL and deletes it. A store that failed is
    closed, never handed out again: the next run opens a fresh one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._free: List[Store] = []
        self._closed = False

    def acquire(self) -> Store:
        """An open store for one run (a kept one if free)."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return Store(self.path)

    def release(self, store: Store) -> None:
        """Commit what the run queued and keep the store for the next run; raises StateError."""
        try:
            store.sync()
            store.shrink()
        except BaseException:
            with contextlib.suppress(Exception):
                store.close()
            raise
        with self._lock:
            if not self._closed:
                self._free.append(store)
                return
        store.close()

    def close(self) -> None:
        """Close every kept store."""
        with self._lock:
            free, self._free, self._closed = self._free, [], True
        for store in free:
            with contextlib.suppress(Exception):
                store.close()


def flush_liveness(paths: Paths) -> int:
    """Write the times LIVENESS holds for this data dir (on stop); returns how many accounts."""
    held = LIVENESS.take(paths.state_db)
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


def reused_uid(recorded: Optional[int], listed: Optional[int]) -> bool:
    """True if a done uid listed with size `listed` cannot be the message recorded with size `recorded`."""
    # Unknown on either side (a record from before sizes were kept, a server that lists 0): no verdict.
    return bool(recorded) and bool(listed) and recorded != listed


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


_STATUS_QUERY = ("SELECT account, last_run, last_success, collected, fallback, last_error, waiting, last_collected,"
                 " last_fallback, redelivered, push FROM account_status")


class _StatusReaders:
    """Read-only connections kept open per store, for the status reads of `serve`.

    Opening a connection is a write: its first read transaction claims a read mark in the
    memory-mapped -shm file (and SQLite running as root chowns the WAL). `serve` reads the
    status for the alert watcher and every overview, so it keeps one connection per store
    (reopened when the file is replaced).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Dict[str, Tuple[sqlite3.Connection, int]] = {}

    def rows(self, db: Path) -> List[Any]:
        """The account_status rows as _STATUS_QUERY selects them (older stores: NULL for new columns)."""

        def status(conn: sqlite3.Connection) -> List[Any]:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(account_status)")}
            # A store the running service has not migrated yet lacks the newer columns.
            query = _STATUS_QUERY
            for column in ("redelivered", "push"):
                if column not in columns:
                    query = query.replace(column, "NULL")
            return conn.execute(query).fetchall()

        return self.read(db, status)

    def read(self, db: Path, work: Callable[[sqlite3.Connection], List[Any]]) -> List[Any]:
        """Run `work` on the kept read-only connection of `db` (e.g. the overview's trail counts)."""
        with self._lock:
            inode = db.stat().st_ino
            kept = self._open.get(str(db))
            if kept is not None and kept[1] != inode:
                kept[0].close()
                kept = None
            if kept is None:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10, check_same_thread=False)
                while len(self._open) >= KEPT_READERS:  # a process reading many stores (tests) stays bounded
                    oldest = next(iter(self._open))
                    self._open.pop(oldest)[0].close()
                kept = self._open[str(db)] = (conn, inode)
            try:
                return work(kept[0])
            except sqlite3.Error:
                kept[0].close()
                del self._open[str(db)]
                raise


KEPT_READERS = 4
_STATUS_READERS = _StatusReaders()


def read_kept(db: Path, work: Callable[[sqlite3.Connection], List[Any]]) -> List[Any]:
    """Run `work` on a read-only connection kept open for `db` (reads that repeat, such as the overview's)."""
    return _STATUS_READERS.read(db, work)


def read_account_status(paths: Paths) -> Dict[str, Dict[str, Any]]:
    """Per-account status for `status` and the UI; empty when nothing ran yet. Never raises.

    In the daemon's process the times of quiet runs (kept in memory, LIVENESS) are included;
    another process sees them once they are written (on change, hourly, on stop).
    """
    try:
        rows = _STATUS_READERS.rows(paths.state_db)
    except (OSError, sqlite3.Error):
        return {}
    result: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        last_run, last_success = row[1], row[2]
        held = LIVENESS.get(paths.state_db, row[0])
        if held is not None:
            last_run = max(last_run or 0, held[0])
            last_success = max(last_success or 0, held[1] or 0) or None
        result[row[0]] = {
            "last_run": _iso(last_run), "last_success": _iso(last_success), "collected": row[3],
            "fallback": row[4], "last_error": row[5], "waiting": row[6], "last_collected": row[7],
            "last_fallback": row[8], "running": lock_held(lock_path(paths, row[0])),
            "redelivered": row[9] or 0, "push": row[10],
        }
    return result
