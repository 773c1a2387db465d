"""One pass over one mailbox: list, retrieve here, place in delivery workers, delete what is durably done.

Throughput: the thread that owns the provider session retrieves (with POP3 PIPELINING the
next RETRs are already on the wire) while up to DELIVERY_CONNECTIONS worker threads hand
messages to MailPlus, each over one SMTP connection reused for the whole run. Workers
only queue the 'done' records; the provider thread commits them in one group (one fsync)
before it sends their DELEs, so a deletion never overtakes its durable record.

What becomes of one message is placer.py's; what a failure with it means, failure.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from smartpop.collector import failure, placement, spool
from smartpop.collector.concurrency import Guards, Pending
from smartpop.collector.placer import Placer
from smartpop.collector.source import RemoteMessage, Source
from smartpop.collector.state import Store
from smartpop.collector.staterows import Key
from smartpop.config.schema import Account, Config
from smartpop.paths import Paths
from smartpop.trail.record import TrailEntry

# The runner's name, not this module's: these lines have always been the runner's, and the
# Logs page (its source column) and admins' log filters know them by it.
log = logging.getLogger("smartpop.collector.runner")

Progress = Callable[[Dict[str, Any]], None]

# SMTP connections (and worker threads) one account run hands mail over with at once.
# Postfix did 1,000 x 10 KB in 1.93 s over one connection and 1.24 s over four (bench/README.md):
# its per-message work, fsync of the queue file included, runs in parallel across connections.
DELIVERY_CONNECTIONS = 3
# Messages the provider thread tells the source about in advance; the protocol decides how
# many it asks for early (POP3 PIPELINING: pop3.WINDOW; IMAP: one batched UID FETCH).
FETCH_AHEAD = 32


@dataclass
class AccountResult:
    """The outcome of one pass over one account."""

    account: str
    ok: bool = True
    skipped: bool = False
    collected: int = 0
    fallback: int = 0
    duplicates: int = 0
    deferred: int = 0
    deleted: int = 0
    redelivered: int = 0
    waiting: Optional[int] = None
    remaining: int = -1
    error: Optional[str] = None
    problems: List[str] = field(default_factory=list)
    quiet: bool = False  # found nothing, changed nothing, wrote nothing (not logged)
    sign_in: bool = False  # an OAuth2 account needs the admin to sign in (again); `error` says which


class AccountRun:
    """State of one pass; built by runner.run_account() (`timeout`: of each network exchange)."""

    def __init__(self, paths: Paths, config: Config, account: Account, store: Store,
                 progress: Optional[Progress], stop: Optional[threading.Event], guards: Guards,
                 timeout: float) -> None:
        self.paths = paths
        self.config = config
        self.account = account
        self.store = store
        self.progress = progress
        self.stop = stop
        self.guards = guards
        self.result = AccountResult(account.name)
        self._lock = threading.Lock()  # guards result and _ready across worker threads
        # Placed messages whose DELE is not sent yet, with the number of their queued 'done' record.
        self._ready: List[Tuple[RemoteMessage, int]] = []
        self._journalled: Set[str] = set()  # uids with journal entries from earlier runs
        self._slots = spool.SpoolSlots(paths.spool, spool.tempfile_prefix(account.name))
        # gethostname, not getfqdn: a reverse DNS lookup can hang on a NAS with broken DNS.
        hostname = socket.gethostname() or "localhost"
        self.placer = Placer(paths, config, account, store, guards, self, hostname, timeout)

    def count(self, name: str, amount: int = 1) -> None:
        """Add `amount` to the result's counter `name` (any thread)."""
        with self._lock:
            setattr(self.result, name, getattr(self.result, name) + amount)

    def problem(self, text: str) -> None:
        """Note a message that could not be placed yet (any thread)."""
        with self._lock:
            self.result.problems.append(text)

    def close_sessions(self) -> None:
        """QUIT every SMTP connection of this run and remove its spool files."""
        self._slots.remove_all()
        self.placer.close_sessions()

    def show_progress(self, phase: str, done: int, total: int) -> None:
        """Tell the progress callback (the web UI's) where the pass is."""
        if self.progress is not None:
            try:
                self.progress({"account": self.account.name, "phase": phase, "done": done, "total": total})
            except Exception:  # a UI callback must never break collection
                log.exception("progress callback failed")

    def recover(self) -> None:
        """Settle copies a killed process left between its durable note and the record of the reply."""
        rows = self.store.in_flight(self.account.name)
        for row in rows:
            # MailPlus has a message only once it answered 250, and a power cut takes Postfix
            # down too: unknown means "send again, marked", never "probably delivered".
            log.warning("%s: uid %s for %s was being handed over when the last run stopped; MailPlus may or "
                        "may not have it, so it is delivered again, marked as a possible duplicate",
                        self.account.name, row["uid"], row["rcpt"])
            if row["spool"]:
                with contextlib.suppress(OSError):
                    os.unlink(row["spool"])  # the message is fetched from the provider again
        if rows:
            self.store.resolve_in_flight(self.account.name)
        spool.clean(self.paths.spool, self.account.name)

    def run(self, source: Source) -> None:
        """Process every message of the mailbox."""
        account = self.account
        messages = source.list()
        folder = source.folder if source.protocol == "IMAP" else ""
        total = len(messages)
        self.show_progress("list", 0, total)
        todo, waiting = self._sort(source, folder, messages)
        if todo:
            self._journalled = self.store.uids_with_copies(account.name, folder, source.uidvalidity)
        waiting += self._deliver_all(source, folder, todo)
        self._delete_ready(source, final=True)
        self.show_progress("commit", total, total)
        self.store.prune(account.name, folder, source.uidvalidity, {m.uid for m in messages},
                         trail_days=self.config.trail.retention_days)
        self.result.waiting = waiting
        self.result.remaining = total - self.result.deleted

    def _sort(self, source: Source, folder: str, messages: List[RemoteMessage]) -> Tuple[List[RemoteMessage], int]:
        """The messages to fetch now, and how many wait for their retry time; done ones are deleted when due."""
        account = self.account
        # Up to 100,000 entries: local to this step, so not kept while messages are delivered.
        known = self.store.messages_of(account.name, folder, source.uidvalidity, {m.uid: m.size for m in messages})
        waiting = 0
        todo: List[RemoteMessage] = []
        now = time.time()
        for message in messages:
            if message.uid in known.reused:
                self._set_aside(message, known.reused[message.uid], Key(account.name, folder, source.uidvalidity,
                                                                        message.uid))
                todo.append(message)
                continue
            if message.uid in known.done:
                if self._delete_due(known.done[message.uid]):
                    source.delete(message.ref)
                    self.result.deleted += 1
                continue
            row = known.open.get(message.uid)
            if row is not None and row.next_try and row.next_try > now:
                waiting += 1
                # Held back until its retry time: still a problem of this run, so that status,
                # the overview and the exit code say that mail waits on the server.
                self.problem(f"uid {message.uid} waits on the server: {row.last_error or 'not placed yet'}")
            else:
                todo.append(message)
        return todo, waiting

    def _deliver_all(self, source: Source, folder: str, todo: List[RemoteMessage]) -> int:
        """Retrieve `todo` here and place it in the delivery workers; how many messages were left waiting."""
        account = self.account
        waiting = 0
        workers = max(1, min(DELIVERY_CONNECTIONS, len(todo)))
        pool = ThreadPoolExecutor(workers, thread_name_prefix=f"smartpop-deliver-{account.name}") \
            if workers > 1 else None
        busy: Set[Future[bool]] = set()  # novermin (annotation only; never evaluated on 3.8)
        # Spooled messages handed to the workers and not finished yet. (Two messages per worker
        # in the queue cost more futex calls, not less.)
        pending = Pending()
        try:
            for index, message in enumerate(todo):
                if self.stop is not None and self.stop.is_set():
                    log.warning("%s: stop requested; %d message(s) left for the next run", account.name,
                                len(todo) - index)
                    waiting += len(todo) - index
                    break
                # At most one message per worker waits spooled: memory and spool space stay bounded.
                if pending.count >= workers:
                    pending.wait_below(workers)
                finished = {f for f in busy if f.done()}
                busy -= finished
                waiting += self._settle(finished)
                self._delete_ready(source)
                source.fetch_ahead(todo[index:index + FETCH_AHEAD])
                self.show_progress("fetch", index, len(todo))
                key = Key(account.name, folder, source.uidvalidity, message.uid)
                spooled = self._retrieve(source, message, key)
                if spooled is None:
                    waiting += 1
                elif pool is None:
                    waiting += 0 if self._deliver(message, key, spooled) else 1
                else:
                    busy.add(pending.submit(pool, self._deliver, message, key, spooled))
        except BaseException:
            # A fatal error ends the run: a message not started yet stays on the server.
            for future in busy:
                future.cancel()
            raise
        finally:
            if pool is not None:
                # Let every worker finish its message (a hand-over is never cut off half-way).
                pool.shutdown(wait=True)
        return waiting + self._settle(busy)

    def _set_aside(self, message: RemoteMessage, recorded: int, key: Key) -> None:
        """A done uid listed with another size: a new message under a reused uid, never deleted unread."""
        log.warning("%s: uid %s was collected before with size %d; the server now lists %d bytes under it. "
                    "It reuses uids (RFC 1939 forbids that), so this is a new message: it is fetched and "
                    "delivered", self.account.name, message.uid, recorded, message.size)
        self.store.set_aside(key)

    def _settle(self, finished: Set[Future[bool]]) -> int:  # novermin
        """Collect finished deliveries: how many left their message waiting; re-raise a fatal error."""
        return sum(1 for future in finished if not future.result())

    def _delete_ready(self, source: Source, final: bool = False) -> None:
        """Delete placed messages on the server whose 'done' record is on disk.

        Records normally reach the disk with the next message's durable 'sending' note
        (group commit), so waiting for that costs no fsync of its own; at the end of the
        run (`final`) whatever is left is committed here.
        """
        with self._lock:
            if final and self._ready:
                self.store.sync_upto(max(seq for _, seq in self._ready))
            ready = [m for m, seq in self._ready if self.store.is_durable(seq)]
            self._ready = [(m, seq) for m, seq in self._ready if not self.store.is_durable(seq)]
        for message in ready:
            self.guards.checkpoint("after_record")
            if not self.account.keep_on_server:
                source.delete(message.ref)
                self.result.deleted += 1
                self.guards.checkpoint("after_dele")

    def _delete_due(self, done_at: Optional[float]) -> bool:
        if not self.account.keep_on_server:
            return True
        days = self.account.delete_after_days
        return days is not None and done_at is not None and time.time() - done_at >= days * 86400

    def _retrieve(self, source: Source, message: RemoteMessage, key: Key) -> Optional[spool.Spooled]:
        """RETR/FETCH into a spool file; None when this one message could not be retrieved."""
        writer = spool.SpoolWriter(self._slots.directory, self._slots.prefix, self._slots, in_memory=True)
        try:
            source.fetch(message.ref, writer.write)
        except BaseException as exc:
            writer.discard()
            if failure.classify(exc) == failure.END_RUN:
                raise
            self._failed(message, key, exc)
            return None
        spooled = writer.close()
        self.guards.checkpoint("after_retr")
        return spooled

    def _deliver(self, message: RemoteMessage, key: Key, spooled: spool.Spooled) -> bool:
        """Place one spooled message (any thread); a problem with it never stops the run."""
        try:
            placed = self.placer.place(message, key, spooled, message.uid in self._journalled)
        except BaseException as exc:
            if failure.classify(exc) == failure.END_RUN:
                raise  # the session, MailPlus or the store is gone: end the run
            self._failed(message, key, exc)
            return False
        finally:
            spooled.remove()
        if placed is not None:
            with self._lock:
                self._ready.append((message, placed))
        return placed is not None

    def _failed(self, message: RemoteMessage, key: Key, exc: BaseException) -> None:
        """One message failed (failure.SKIP or HOLD); called while its exception is handled."""
        if failure.classify(exc) == failure.SKIP:
            # e.g. the message vanished or RETR was refused: the session itself still works.
            log.warning("%s: uid %s skipped this run: %s", self.account.name, message.uid, exc)
            self.problem(str(exc))
            return
        log.exception("%s: uid %s could not be handled; it stays on the server", self.account.name, message.uid)
        error = f"{exc.__class__.__name__}: {exc}"
        self.store.note_attempt(key, "", "", message.size, error, placement.UNPLACEABLE_RETRY,
                                trail=TrailEntry(detail=error, size=message.size, outcome="failed"))
        self.problem(f"uid {message.uid}: {exc.__class__.__name__}: {exc}")
