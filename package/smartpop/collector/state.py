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
"""

from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

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
    last_fallback INTEGER, running INTEGER NOT NULL DEFAULT 0, redelivered INTEGER NOT NULL DEFAULT 0);
"""
# Columns added after the first release; stores made before them get them on open.
ADDED_COLUMNS = (
    # Copies sent again, marked, after a hand-over ended in doubt (docs/COLLECTION.md).
    ("account_status", "redelivered", "INTEGER NOT NULL DEFAULT 0"),
    # The size the server listed (POP3 LIST, IMAP RFC822.SIZE) when the message was done: a done
    # uid listed with another size is a new message under a reused uid.
    ("messages", "listed_size", "INTEGER"),
)

LEDGER_DAYS = 180
VANISHED_DAYS = 30
# The age-based clean-up (ledger, long-gone messages) runs at most this often per account
# and process when nothing vanished from the server: a quiet poll then writes nothing.
PRUNE_EVERY = 3600.0
_last_prune: Dict[Tuple[str, str], float] = {}


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


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create) the store with durable settings."""
    try:
        # Shared by the threads of one run; Store serialises every use with a lock.
        conn = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsynced, also in WAL mode (NORMAL would not be).
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        add_columns(conn)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state store {path} is unusable: {exc}") from exc
    try:
        path.chmod(0o600)
    except OSError:
        pass
    return conn


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
        self._reader = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
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
                     retry_after: float) -> None:
        """Record a retrieval whose message is not (yet) fully placed."""
        now = time.time()
        self._enqueue([(
            "INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, message_id, digest, size,"
            " attempts, next_try, last_error) VALUES (?,?,?,?, 'pending', ?, ?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (account, folder, uidvalidity, uid) DO UPDATE SET attempts=attempts+1,"
            " next_try=excluded.next_try, last_error=excluded.last_error, message_id=excluded.message_id,"
            " digest=excluded.digest, size=excluded.size",
            (*key, now, message_id, digest, size, now + retry_after, error), False)], durable=True, key=key)

    def mark_done(self, key: Key, message_id: str, digest: str, size: int, listed_size: Optional[int] = None,
                  fallback: bool = False) -> int:
        """Every recipient is placed: queued; returns its number for is_durable() / sync_upto().

        The account's 'collected' (and 'fallback') figures ride in the same commit, so after
        a crash they count exactly the messages whose records survived.
        """
        now = time.time()
        return self._enqueue([
            ("INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, done_at, message_id, digest,"
             " size, listed_size) VALUES (?,?,?,?, 'done', ?, ?, ?, ?, ?, ?) ON CONFLICT (account, folder, uidvalidity,"
             " uid) DO UPDATE SET state='done', done_at=excluded.done_at, last_error=NULL, next_try=NULL,"
             " listed_size=excluded.listed_size",
             (*key, now, now, message_id, digest, size, listed_size), False),
            ("INSERT INTO account_status (account, collected, fallback) VALUES (?, 1, ?) ON CONFLICT (account)"
             " DO UPDATE SET collected=collected+1, fallback=fallback+excluded.fallback",
             (key.account, 1 if fallback else 0), False),
        ], durable=False, key=key)

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

    def prune(self, account: str, folder: str, uidvalidity: str, present: Set[str]) -> None:
        """Forget rows of messages gone from the server for a while, and old ledger entries."""
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
        """Mark the start of a run."""
        self._write("INSERT INTO account_status (account, last_run, running) VALUES (?, ?, 1) "
                    "ON CONFLICT (account) DO UPDATE SET last_run=excluded.last_run, running=1",
                    (account, time.time()))

    def run_finished(self, account: str, ok: bool, collected: int, fallback: int, error: Optional[str],
                     waiting: Optional[int]) -> None:
        """Store the outcome of a run (the totals are counted by mark_done, with the records)."""
        now = time.time()
        self._write(
            "INSERT INTO account_status (account, last_run, last_success, last_error, waiting,"
            " last_collected, last_fallback, running) VALUES (?,?,?,?,?,?,?,0) ON CONFLICT (account) DO UPDATE SET"
            " last_success=COALESCE(excluded.last_success, last_success),"
            " last_error=excluded.last_error, waiting=COALESCE(excluded.waiting, waiting),"
            " last_collected=excluded.last_collected, last_fallback=excluded.last_fallback, running=0",
            (account, now, now if ok else None, error, waiting, collected, fallback))


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
                 " last_fallback, running, redelivered FROM account_status")


def read_account_status(paths: Paths) -> Dict[str, Dict[str, Any]]:
    """Per-account status for `status` and the UI; empty when nothing ran yet. Never raises."""
    if not paths.state_db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{paths.state_db}?mode=ro", uri=True, timeout=10)
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(account_status)")}
            # A store the running service has not migrated yet has no 'redelivered' column.
            query = _STATUS_QUERY if "redelivered" in columns else _STATUS_QUERY.replace("redelivered", "0")
            rows = conn.execute(query).fetchall()
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
            "redelivered": row[10],
        }
    return result
