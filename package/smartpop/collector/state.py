"""The collection state in SQLite (DATA/state.sqlite3): what was seen, delivered, and the status.

Every write that precedes an irreversible step is committed with synchronous=FULL before
that step happens: the 'sending' journal entry before the SMTP dot, the 'done' record
before DELE / \\Deleted. Writes that guard nothing irreversible yet (a delivered copy, the
ledger, 'done') are queued and ride along with the next commit, which is at the latest
the one made before their message's deletion (runner: sync() before DELE). Concurrent
threads share commits (group commit, groupcommit.py): one fsync covers every write queued
before it.

Why a queued write may be lost in a crash without harm: a copy left at 'sending' is
recovered as 'doubt', and a copy in doubt is delivered again, marked as a possible
duplicate (docs/COLLECTION.md, "Doubt"): MailPlus has a message only once it answered 250,
and a power cut takes Postfix down with SmartPop. A lost 'done' only means the message is
looked at again and found placed. The only price of a lost 'delivered' record is that
marked duplicate; nothing is ever taken for delivered without a recorded 250.

Next door: the tables and how the file is opened (statedb.py), the values a poll gets
(staterows.py), what the stores of one process share: queued ledger digests, prune times,
quiet-run times (statehub.py), the stores the daemon keeps open (storepool.py), and the
status reads of `status` and the UI (statusread.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Set, Tuple

from smartpop.collector.groupcommit import GroupCommit, Statement
from smartpop.collector.statedb import BUSY_TIMEOUT, connect, run_batch
from smartpop.collector.statehub import HUB, StateHub
from smartpop.collector.staterows import Key, MailboxState, MessageRow, reused_uid
from smartpop.errors import StateError
from smartpop.trail import record as trail_record

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
# A run that changes nothing but its time ("last checked") writes it at most this often;
# between writes the time is kept in memory (StateHub.liveness), so an idle poll writes nothing.
FLUSH_EVERY = 3600.0


class Store:
    """Typed access to the state tables, shared by the threads of one run."""

    def __init__(self, path: Path, hub: StateHub = HUB) -> None:
        self.path = path
        self.hub = hub
        self.conn = connect(path)
        self._conn_lock = threading.RLock()  # one user of the connection at a time
        # Reads use a second connection: in WAL mode they then never wait for a commit's fsync.
        self._reader = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
        self._reader.row_factory = sqlite3.Row
        self._reader_lock = threading.Lock()
        # Writes are tagged with the message (Key) and the ledger digest (str) they touch.
        self._writes = GroupCommit(self._commit, f"state store {path}",
                                   on_queued=self._ledger_queued, on_settled=self._ledger_settled)
        self.commits = 0

    def close(self) -> None:
        """Commit what is queued and close the connection."""
        try:
            self.sync()
        finally:
            self.hub.ledger.discard([tag for tag in self._writes.abandon() if isinstance(tag, str)], self)
            self._reader.close()
            self.conn.close()

    def shrink(self) -> None:
        """Give the page caches back (a kept store waits, maybe for an hour, for its next run)."""
        with self._conn_lock:
            self.conn.execute("PRAGMA shrink_memory")
        with self._reader_lock:
            self._reader.execute("PRAGMA shrink_memory")

    # --- the group commit ---------------------------------------------------------------
    def sync(self) -> None:
        """Commit every queued write now (before an irreversible step that relies on them)."""
        self._writes.sync()

    def sync_upto(self, seq: int) -> None:
        """Commit at least up to the write numbered `seq`."""
        self._writes.sync_upto(seq)

    def is_durable(self, seq: int) -> bool:
        """True once the write numbered `seq` (as returned by mark_done) is committed."""
        return self._writes.is_durable(seq)

    def sync_ledger(self, digest: str) -> None:
        """Commit the ledger rows of `digest` this store still has queued (another store's duplicate check)."""
        self._writes.sync_upto(self._writes.pending(digest))

    def _ledger_queued(self, tag: Hashable) -> None:
        if isinstance(tag, str):
            self.hub.ledger.add(tag, self)

    def _ledger_settled(self, tag: Hashable) -> None:
        if isinstance(tag, str):
            self.hub.ledger.discard([tag], self)

    def _enqueue(self, statements: List[Statement], durable: bool, key: Optional[Key] = None,
                 digest: str = "") -> int:
        """Queue writes; with `durable`, return only once they (and all before them) are committed."""
        tags: Tuple[Hashable, ...] = () if key is None else (key,)
        if digest:
            tags += (digest,)
        return self._writes.enqueue(statements, durable, tags)

    def _commit(self, batch: List[Statement]) -> None:
        """Write one batch (the group commit calls this, one batch at a time)."""
        with self._conn_lock:
            run_batch(self.conn, batch)
            self.commits += 1

    def _read(self, sql: str, args: Sequence[Any]) -> List[sqlite3.Row]:
        rows: List[sqlite3.Row] = []
        self._each(sql, args, rows.append)
        return rows

    def _each(self, sql: str, args: Sequence[Any], take: Callable[[sqlite3.Row], None]) -> None:
        """Hand every row of a query to `take`, one at a time (no list of all rows in memory)."""
        self._scan(sql, args, take, sqlite3.Row)

    def _scan(self, sql: str, args: Sequence[Any], take: Callable[[Any], None], factory: Any = None) -> None:
        """Like _each, with plain tuples for rows (no `factory`): for the scans over a whole mailbox.

        A quiet poll reads its whole mailbox twice (messages_of, prune); over 30,000 rows a
        sqlite3.Row each and look-ups by column name cost ~150 M instructions (callgrind, 3.13).
        The callers bind each column to a name by unpacking the tuple under their SELECT.
        """
        with self._reader_lock:
            try:
                cursor = self._reader.cursor()
                cursor.row_factory = factory
                for row in cursor.execute(sql, args):
                    take(row)
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path} cannot be read: {exc}") from exc

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        self._enqueue([(sql, args, False)], durable=True)

    # --- messages -----------------------------------------------------------------------
    def messages_of(self, account: str, folder: str, uidvalidity: str,
                    listed: Optional[Mapping[str, int]] = None) -> MailboxState:
        """What is known of one mailbox generation, by uid (one query instead of one per message).

        With `listed` (uid -> size the server lists now), a done uid whose recorded size differs
        goes to `reused` instead of `done`: the server gave a new message an old uid.
        """
        self.sync()
        known = MailboxState({}, {}, {})

        def take(row: Tuple[Any, ...]) -> None:
            uid, state, first_seen, done_at, next_try, attempts, listed_size, last_error = row
            if state == "done":
                if listed is not None and reused_uid(listed_size, listed.get(uid)):
                    known.reused[uid] = listed_size
                else:
                    known.done[uid] = done_at
            else:
                known.open[uid] = MessageRow(state, first_seen, done_at, next_try, attempts, last_error)

        self._scan("SELECT uid, state, first_seen, done_at, next_try, attempts, listed_size, last_error FROM messages "
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

    def prune(self, account: str, folder: str, uidvalidity: str, present: Set[str],
              trail_days: float = TRAIL_DAYS) -> None:
        """Forget rows of messages gone from the server for a while, old ledger entries and old trail rows."""
        now = time.time()
        self.sync()
        gone: List[str] = []

        def take(row: Tuple[Any, ...]) -> None:
            (uid,) = row
            if uid not in present:
                gone.append(uid)

        self._scan("SELECT uid FROM messages WHERE account=? AND folder=? AND uidvalidity=? AND on_server",
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
        self.hub.prunes.note(self.path, account, now)

    def _pruned_recently(self, account: str, now: float) -> bool:
        last = self.hub.prunes.last(self.path, account)
        return last is not None and now - last < PRUNE_EVERY

    # --- copies and the ledger ----------------------------------------------------------
    def placed(self, key: Key) -> Dict[str, str]:
        """Recipients of `key` that MailPlus took (a recorded 250): rcpt -> status."""
        self.sync_upto(self._writes.pending(key))
        rows = self._read("SELECT rcpt, status FROM copies WHERE account=? AND folder=? AND uidvalidity=?"
                          " AND uid=? AND status='delivered'", key)
        return {row["rcpt"]: row["status"] for row in rows}

    def in_doubt(self, key: Key) -> Set[str]:
        """Recipients of `key` whose hand-over was interrupted: sent again, marked as a possible duplicate."""
        self.sync_upto(self._writes.pending(key))
        rows = self._read("SELECT rcpt FROM copies WHERE account=? AND folder=? AND uidvalidity=?"
                          " AND uid=? AND status='doubt'", key)
        return {row["rcpt"] for row in rows}

    def in_ledger(self, digest: str, rcpts: Sequence[str]) -> Set[str]:
        """Which of `rcpts` already received the message with `digest` (any account of this process)."""
        if not digest:
            return set()  # a message without identity is never a copy of another
        self.hub.ledger.commit(digest)  # ledger rows of this digest still queued somewhere: commit them first
        if not rcpts:
            return set()
        known = {row["rcpt"] for row in self._read("SELECT rcpt FROM ledger WHERE digest=?", (digest,))}
        return {rcpt for rcpt in rcpts if rcpt in known}

    def uids_with_copies(self, account: str, folder: str, uidvalidity: str) -> Set[str]:
        """Messages of one mailbox generation with any journal entry (the others have nothing placed)."""
        self.sync()
        rows = self._read("SELECT DISTINCT uid FROM copies WHERE account=? AND folder=? AND uidvalidity=?",
                          (account, folder, uidvalidity))
        return {row["uid"] for row in rows}

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
        return [dict(row) for row in rows]

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
            last = rows[0]
            same = (last["last_error"] == error and (waiting is None or last["waiting"] == waiting)
                    and (last["last_collected"] or 0) == collected and (last["last_fallback"] or 0) == fallback
                    and (not ok or last["last_success"] is not None))
            if same and last["last_run"] is not None and now - last["last_run"] < FLUSH_EVERY:
                self.hub.liveness.note(self.path, account, now, now if ok else None)
                return "quiet"
        else:
            same = False
        held = self.hub.liveness.take(self.path, account).get(account)
        success = now if ok else (held[1] if held else None)
        self._write(
            "INSERT INTO account_status (account, last_run, last_success, last_error, waiting,"
            " last_collected, last_fallback, running) VALUES (?,?,?,?,?,?,?,0) ON CONFLICT (account) DO UPDATE SET"
            " last_success=NULLIF(MAX(COALESCE(excluded.last_success, 0), COALESCE(last_success, 0)), 0),"
            " last_error=excluded.last_error, waiting=COALESCE(excluded.waiting, waiting),"
            " last_collected=excluded.last_collected, last_fallback=excluded.last_fallback, running=0",
            (account, now, success, error, waiting, collected, fallback))
        return "flushed" if same else "changed"

