"""One collection pass for one account: retrieve -> deliver (250) -> record -> delete.

Order per message (docs/CONTRACTS.md "Collection", docs/COLLECTION.md):
1. skip what the store marks done (delete it now if due), else RETR/FETCH into the spool;
2. route; drop recipients already placed (this message's journal) or already served
   (the multidrop ledger);
3. note the copies as 'sending' (durable), send the DATA dot, then record the reply;
   5xx copies go to the fallback recipient in a second transaction; 4xx stay pending;
   a copy whose reply never came (or whose run died) is 'doubt': sent again with an
   X-SmartPop-Redelivered header, never taken for delivered (docs/COLLECTION.md, "Doubt");
4. once every recipient has a recorded 250, mark the message done; commit (durable), then
   DELE / \\Deleted;
5. QUIT / UID EXPUNGE commits the deletions at the end.

Throughput: the thread that owns the provider session retrieves (with POP3 PIPELINING the
next RETRs are already on the wire) while up to DELIVERY_CONNECTIONS worker threads hand
messages to MailPlus, each over one SMTP connection reused for the whole run. Workers
only queue the 'done' records; the provider thread commits them in one group (one fsync)
before it sends their DELEs, so a deletion never overtakes its durable record.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from smartpop import __version__, fsutil
from smartpop.collector import delivery, headers, loopkey, recipients, spool
from smartpop.collector.source import RemoteMessage, Source, open_source
from smartpop.collector.state import Key, Store, StorePool, lock_path
from smartpop.config.schema import Account, Config
from smartpop.errors import AuthError, ConnectError, LockBusy, ProtocolError, SmartPopError, StateError, TemporaryError
from smartpop.health import roundtrip
from smartpop.paths import Paths
from smartpop.trail.record import TrailEntry

log = logging.getLogger(__name__)

Progress = Callable[[Dict[str, Any]], None]

# Test seam: called at each step boundary with its name (after_retr, after_note, after_data,
# after_record, after_dele, before_quit); the crash tests install a hook that SIGKILLs the
# process there. In production it does nothing.
def _no_checkpoint(step: str) -> None:
    """Production: step boundaries are just boundaries."""


checkpoint: Callable[[str], None] = _no_checkpoint


class HandOver:
    """Counts threads between a durable 'sending' entry and their dot leaving the socket.

    A process that dies inside that window leaves a 'sending' copy that MailPlus may or may
    not have: the next run sends it again, marked (a possible duplicate, never a loss).
    `quiet()` lets the step-boundary crash tests' hook kill only while no thread is inside
    it, so that a kill at a step boundary of one thread is not an arbitrary point in another;
    the random-kill tests kill anywhere.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._inside = 0

    def enter(self) -> None:
        """A thread starts its durable note + dot."""
        with self._cv:
            self._inside += 1

    def leave(self) -> None:
        """The dot is written (or the attempt failed)."""
        with self._cv:
            self._inside -= 1
            self._cv.notify_all()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Hold while no thread is inside the window (nobody enters meanwhile)."""
        with self._cv:
            self._cv.wait_for(lambda: self._inside == 0)
            yield


handover = HandOver()

# A message nobody could take (even the fallback refused it) is retried at most this often.
UNPLACEABLE_RETRY = 3600.0
NETWORK_TIMEOUT = 120.0
# SMTP connections (and worker threads) one account run hands mail over with at once.
# Postfix did 1,000 x 10 KB in 1.93 s over one connection and 1.24 s over four (bench/README.md):
# its per-message work, fsync of the queue file included, runs in parallel across connections.
DELIVERY_CONNECTIONS = 3
# Accounts polled at once by one fetch pass or the daemon. Most polls are waits on the
# network (TLS handshake, login, UIDL), so a few in parallel make 200 accounts fast while
# a 2-core NAS stays responsive; each account still has its own file lock.
ACCOUNT_CONCURRENCY = 4
# Messages the provider thread tells the source about in advance; the protocol decides how
# many it asks for early (POP3 PIPELINING: pop3.WINDOW; IMAP: one batched UID FETCH).
FETCH_AHEAD = 32
# Marks a copy sent again because an earlier hand-over of it ended in doubt.
REDELIVERED_HEADER = "X-SmartPop-Redelivered"
# X-SmartPop-Fallback lines one fallback copy carries at most: a list of thousands would
# outgrow Postfix's header_size_limit (100 KB), which cuts the header short.
FALLBACK_NOTES = 20
# Errors that end the whole run rather than one message: the session, MailPlus or the store is gone.
_FATAL = (ConnectError, AuthError, LockBusy, StateError)

# One multidrop message may sit in several provider mailboxes polled at once: copies with the
# same digest are placed one after another, so the second sees the first in the ledger.
_digest_locks: Dict[str, List[Any]] = {}
_digest_guard = threading.Lock()


@contextlib.contextmanager
def _one_at_a_time(digest: str) -> Iterator[None]:
    if not digest:
        yield  # no identity, so no other copy to wait for
        return
    with _digest_guard:
        entry = _digest_locks.setdefault(digest, [threading.Lock(), 0])
        entry[1] += 1
    entry[0].acquire()
    try:
        yield
    finally:
        entry[0].release()
        with _digest_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _digest_locks[digest]


class _Pending:
    """Counts messages handed to the delivery workers and not finished; the provider thread waits on it."""

    def __init__(self) -> None:
        self.count = 0
        self._cv = threading.Condition()
        self._below = 0  # the waiting thread wants count < this (0: nobody waits)

    def submit(self, pool: ThreadPoolExecutor, fn: Callable[..., bool], *args: Any) -> Future[bool]:  # novermin
        """pool.submit(fn, *args), counted until it is done."""
        with self._cv:
            self.count += 1
        future = pool.submit(fn, *args)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[bool]) -> None:  # novermin
        with self._cv:
            self.count -= 1
            if self.count < self._below:
                self._below = 0
                self._cv.notify()

    def wait_below(self, limit: int) -> None:
        """Block until fewer than `limit` messages are pending."""
        with self._cv:
            while self.count >= limit:
                self._below = limit
                self._cv.wait()


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


def policy_for(config: Config, account: Account, loop_key: bytes = b"") -> recipients.RoutingPolicy:
    """The routing facts of `account` under `config` (`loop_key`: loopkey.load_or_create)."""
    user = account.username.lower()
    # The catch-all's own address never names a real recipient. A login without a domain
    # (some providers use "m0123456" or "sammel") is taken as local part in each local domain.
    own = (user,) if "@" in user else tuple(f"{user}@{domain}" for domain in config.local_domains)
    return recipients.RoutingPolicy(
        mode=account.mode, local_domains=tuple(config.local_domains), aliases=dict(config.aliases),
        fallback=config.fallback_recipient, deliver_to=account.deliver_to, own_addresses=own,
        loop_key=loop_key)


def delivery_domains(config: Config) -> Tuple[str, ...]:
    """The domains SmartPop may hand mail to: local_domains, plus the deliver_to of single-drop accounts.

    A single-drop account's deliver_to is the admin's own statement of a local mailbox (it
    is allowed without local_domains); nothing a message says can add a domain here.
    """
    domains = [d.lower() for d in config.local_domains]
    for account in config.accounts:
        if account.mode == "single" and account.deliver_to:
            domains.append(account.deliver_to.rpartition("@")[2].lower())
    return tuple(sorted(set(domains)))


def return_path(fields: List[headers.Field]) -> str:
    """MAIL FROM from the topmost Return-Path; '' (null sender) when absent, broken or not a plain address."""
    value = headers.first(fields, "return-path")
    if value is None:
        return ""
    text = value.strip()
    if text.startswith("<") and ">" in text:
        text = text[1:text.index(">")]
    if text == "":
        return ""
    return recipients.normalise(text) or ""


def _header_text(value: Optional[str]) -> str:
    """A header value unfolded and decoded (RFC 2047) for the trail, which escapes and bounds it."""
    # Only the start matters: the trail keeps a few hundred characters of a value that may be huge.
    return headers.decode_words(re.sub(r"\r?\n(?=[ \t])", "", (value or "")[:4000])).strip()


def _address_in(value: str) -> str:
    """The address in a From value, for the trail's display: inside the last <...>, else the first word with '@'.

    Not email.utils.parseaddr: that cost a fifth of a millisecond per message in the throughput
    profile, for a field that is only shown and searched as text.
    """
    start = value.rfind("<")
    if start >= 0:
        end = value.find(">", start)
        if end > start:
            return value[start + 1:end].strip()
    for word in value.split():
        if "@" in word:
            return word.strip("<>()[],;:\"'")
    return ""


class AccountRun:
    """State of one pass; built by run_account()."""

    def __init__(self, paths: Paths, config: Config, account: Account, store: Store,
                 progress: Optional[Progress], stop: Optional[threading.Event]) -> None:
        self.paths = paths
        self.config = config
        self.account = account
        self.store = store
        self.progress = progress
        self.stop = stop
        self.policy = policy_for(config, account, loopkey.load_or_create(paths))
        self.domains = delivery_domains(config)
        self.result = AccountResult(account.name)
        # gethostname, not getfqdn: a reverse DNS lookup can hang on a NAS with broken DNS.
        self.hostname = socket.gethostname() or "localhost"
        self._lock = threading.Lock()  # guards result, _ready and _sessions across worker threads
        # Placed messages whose DELE is not sent yet, with the number of their queued 'done' record.
        self._ready: List[Tuple[RemoteMessage, int]] = []
        self._journalled: Set[str] = set()  # uids with journal entries from earlier runs
        self._sessions: List[delivery.SmtpSession] = []
        self._local = threading.local()
        self._slots = spool.SpoolSlots(paths.spool, spool.tempfile_prefix(account.name))
        # Per-message constants, made once: pathlib joins and formatting showed in the profile.
        self._received_from = headers.safe_header_text(account.host, 100)
        self._date = (0, "")  # (second, RFC 5322 date of that second) for the Received line

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self.result, name, getattr(self.result, name) + amount)

    def _problem(self, text: str) -> None:
        with self._lock:
            self.result.problems.append(text)

    def _session(self) -> delivery.SmtpSession:
        """This thread's SMTP connection to MailPlus, opened on first use and kept for the run."""
        session: Optional[delivery.SmtpSession] = getattr(self._local, "session", None)
        if session is None:
            target = self.config.delivery
            session = delivery.SmtpSession(target.host, target.port, NETWORK_TIMEOUT, self.hostname,
                                           domains=self.domains)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close_sessions(self) -> None:
        """QUIT every SMTP connection of this run and remove its spool files."""
        self._slots.remove_all()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _progress(self, phase: str, done: int, total: int) -> None:
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
        known = self.store.messages_of(account.name, folder, source.uidvalidity,
                                       {m.uid: m.size for m in messages})
        total = len(messages)
        self._progress("list", 0, total)
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
                self._problem(f"uid {message.uid} waits on the server: {row.last_error or 'not placed yet'}")
            else:
                todo.append(message)
        del known  # up to 100,000 entries: not needed while messages are delivered
        if todo:
            self._journalled = self.store.uids_with_copies(account.name, folder, source.uidvalidity)
        workers = max(1, min(DELIVERY_CONNECTIONS, len(todo)))
        pool = ThreadPoolExecutor(workers, thread_name_prefix=f"smartpop-deliver-{account.name}") \
            if workers > 1 else None
        busy: Set[Future[bool]] = set()  # novermin (annotation only; never evaluated on 3.8)
        # Spooled messages handed to the workers and not finished yet: a counter and one condition
        # instead of concurrent.futures.wait(), which hooked a waiter into every future in hand
        # for each message. (Two messages per worker in the queue cost more futex calls, not less.)
        pending = _Pending()
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
                self._progress("fetch", index, len(todo))
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
        waiting += self._settle(busy)
        self._delete_ready(source, final=True)
        self._progress("commit", total, total)
        self.store.prune(account.name, folder, source.uidvalidity, {m.uid for m in messages},
                         trail_days=self.config.trail.retention_days)
        self.result.waiting = waiting
        self.result.remaining = total - self.result.deleted

    def _set_aside(self, message: RemoteMessage, recorded: int, key: Key) -> None:
        """A done uid listed with another size: a new message under a reused uid, never deleted unread."""
        log.warning("%s: uid %s was collected before with size %d; the server now lists %d bytes under it. "
                    "It reuses uids (RFC 1939 forbids that), so this is a new message: it is fetched and "
                    "delivered", self.account.name, message.uid, recorded, message.size)
        self.store.set_aside(key)

    def _settle(self, finished: Set[Future[bool]]) -> int:  # novermin
        """Collect finished deliveries: how many left their message waiting; re-raise a fatal error."""
        left = 0
        for future in finished:
            if not future.result():
                left += 1
        return left

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
            checkpoint("after_record")
            if not self.account.keep_on_server:
                source.delete(message.ref)
                self.result.deleted += 1
                checkpoint("after_dele")

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
        except _FATAL:
            writer.discard()
            raise
        except ProtocolError as exc:
            # e.g. the message vanished or RETR was refused: the session itself still works.
            writer.discard()
            log.warning("%s: uid %s skipped this run: %s", self.account.name, message.uid, exc)
            self._problem(str(exc))
            return None
        except Exception as exc:
            writer.discard()
            self._broken(message, key, exc)
            return None
        except BaseException:
            writer.discard()
            raise
        spooled = writer.close()
        checkpoint("after_retr")
        return spooled

    def _broken(self, message: RemoteMessage, key: Key, exc: Exception) -> None:
        log.exception("%s: uid %s could not be handled; it stays on the server", self.account.name, message.uid)
        error = f"{exc.__class__.__name__}: {exc}"
        self.store.note_attempt(key, "", "", message.size, error, UNPLACEABLE_RETRY,
                                trail=TrailEntry(detail=error, size=message.size, outcome="failed"))
        self._problem(f"uid {message.uid}: {exc.__class__.__name__}: {exc}")

    def _deliver(self, message: RemoteMessage, key: Key, spooled: spool.Spooled) -> bool:
        """Place one spooled message (any thread); a problem with it never stops the run."""
        try:
            placed = self._place(message, key, spooled)
        except _FATAL:
            raise  # the session, MailPlus or the store is gone: end the run
        except ProtocolError as exc:
            log.warning("%s: uid %s skipped this run: %s", self.account.name, message.uid, exc)
            self._problem(str(exc))
            return False
        except Exception as exc:
            self._broken(message, key, exc)
            return False
        finally:
            spooled.remove()
        if placed is not None:
            with self._lock:
                self._ready.append((message, placed))
        return placed is not None

    def _place(self, message: RemoteMessage, key: Key, spooled: spool.Spooled) -> Optional[int]:
        """Route and hand over one message; the number of its queued 'done' record, None if not placed."""
        if roundtrip.consume(self.paths, spooled.fields, self.account.name):
            # The Health page's test message: recorded done (so deleted) like any placed message, delivered to nobody.
            trail = self._trail(spooled, "round trip", "the Health page's test message, taken back by SmartPop")
            trail.outcome = "consumed"
            return self.store.mark_done(key, spooled.message_id, spooled.dedup_digest(), spooled.size, message.size,
                                        trail=trail)
        decision = recipients.decide(spooled.fields, self.policy)
        if any(recipients.NO_SMTPUTF8 in why for _, why in decision.refused) and self._session().offers_smtputf8():
            # Only now is it worth asking MailPlus: the exact non-ASCII address beats the fallback.
            decision = recipients.decide(spooled.fields, replace(self.policy, smtputf8=True))
        with _one_at_a_time(spooled.dedup_digest()):
            return self._place_routed(message, key, spooled, decision)

    def _place_routed(self, message: RemoteMessage, key: Key, spooled: spool.Spooled,
                      decision: recipients.RoutingDecision) -> Optional[int]:
        name = self.account.name
        msgid = spooled.message_id or "(no Message-ID)"
        log.info("%s: message %s uid %s: rule %s -> %s; %s", name, msgid, message.uid, decision.rule,
                 ", ".join(decision.recipients) or "nobody", decision.detail)
        if decision.refused:
            log.warning("%s: message %s uid %s: not a plain local mailbox, so the copy goes to the fallback: %s",
                        name, msgid, message.uid, "; ".join(f"{a!r} ({why})" for a, why in decision.refused))
        digest = spooled.dedup_digest()
        trail = self._trail(spooled, decision.rule, decision.detail)
        trail.add([a for a, _ in decision.refused], "refused")
        # The copy that stands in for refused or unknown recipients is the fallback's, not a user's.
        to_fallback = ((self.policy.fallback or self.policy.deliver_to)
                       if decision.rule in ("fallback", "loop") or decision.refused else None)
        if not decision.recipients:
            error = "no recipient and no fallback_recipient configured"
            log.error("%s: message %s uid %s kept on the server: %s", name, msgid, message.uid, error)
            trail.detail += f"; {error}"
            trail.settle(placed=False)
            self.store.note_attempt(key, spooled.message_id, digest, spooled.size, error, UNPLACEABLE_RETRY,
                                    trail=trail)
            self._problem(error)
            return None
        # A message without journal entries from an earlier run has nothing placed yet.
        journalled = message.uid in self._journalled
        placed = self.store.placed(key) if journalled else {}
        doubtful = self.store.in_doubt(key) if journalled else set()
        todo = [r for r in decision.recipients if r not in placed]
        for rcpt in (r for r in decision.recipients if r in placed):
            trail.add([rcpt], "fallback" if rcpt == to_fallback else "user", "placed by an earlier run")
        dupes = self.store.in_ledger(digest, todo)
        if dupes:
            log.info("%s: message %s uid %s: already delivered to %s from another copy; not sent again",
                     name, msgid, message.uid, ", ".join(sorted(dupes)))
            self.store.record_duplicate(key, sorted(dupes))
            trail.add(sorted(dupes), "duplicate", "already delivered from another copy of this message")
            self._count("duplicates", len(dupes))
            todo = [r for r in todo if r not in dupes]
        sender = trail.sender  # return_path(), already worked out for the trail
        used_fallback = decision.rule in ("fallback", "loop") or bool(decision.refused)
        unplaced: Dict[str, str] = {}
        deferred: Dict[str, str] = {}
        if todo:
            outcome = self._hand_over(key, spooled, sender, todo, doubtful, via="route", trail=trail,
                                      to_fallback=to_fallback)
            deferred.update(outcome.deferred)
            unplaced.update(outcome.rejected)
        if unplaced:
            fallback = self.config.fallback_recipient
            if fallback and self.store.in_ledger(digest, [fallback]):
                self.store.record_duplicate(key, sorted(unplaced))
                trail.add([fallback], "duplicate", "the fallback mailbox already has this message")
                log.info("%s: message %s: refused for %s; the fallback %s already has it", name, msgid,
                         ", ".join(sorted(unplaced)), fallback)
                unplaced = {}
            elif fallback:
                log.warning("%s: message %s refused for %s; sending that copy to the fallback %s", name, msgid,
                            "; ".join(f"{r} ({why})" for r, why in unplaced.items()), fallback)
                outcome = self._hand_over(key, spooled, sender, [fallback], doubtful, via="fallback",
                                          refused=unplaced, trail=trail, to_fallback=fallback)
                if outcome.accepted:
                    used_fallback = True
                    self.store.record_duplicate(key, sorted(unplaced))
                    unplaced = {}
                elif outcome.deferred:
                    deferred.update({r: outcome.reply for r in unplaced})
                    unplaced = {}
        if deferred or unplaced:
            error = "; ".join(f"{r}: {why}" for r, why in {**deferred, **unplaced}.items())[:500]
            retry = UNPLACEABLE_RETRY if unplaced and not deferred else 0.0
            level = logging.ERROR if unplaced else logging.WARNING
            log.log(level, "%s: message %s uid %s stays on the server (%s): %s", name, msgid, message.uid,
                    "nobody would take it" if unplaced else "temporary failure, retried next run", error)
            trail.settle(placed=False)
            self.store.note_attempt(key, spooled.message_id, digest, spooled.size, error, retry, trail=trail)
            self._count("deferred")
            self._problem(error)
            return None
        # Queued, not committed: the provider thread commits it before the DELE (_delete_ready).
        trail.settle(placed=True, fallback=used_fallback)
        done = self.store.mark_done(key, spooled.message_id, digest, spooled.size, message.size,
                                    fallback=used_fallback, trail=trail)
        self._count("collected")
        if used_fallback:
            self._count("fallback")
        return done

    def _trail(self, spooled: spool.Spooled, rule: str, detail: str) -> TrailEntry:
        """A trail entry with what the message's header says (the subject only when trail.subjects is on)."""
        fields = spooled.fields
        subject = headers.first(fields, "subject") if self.config.trail.subjects else None
        return TrailEntry(
            message_id=spooled.message_id, sender=return_path(fields),
            from_addr=_address_in(_header_text(headers.first(fields, "from"))),
            subject=None if subject is None else _header_text(subject), rule=rule, detail=detail, size=spooled.size)

    def _hand_over(self, key: Key, spooled: spool.Spooled, sender: str, rcpts: List[str], doubtful: Set[str],
                   via: str, refused: Optional[Dict[str, str]] = None, trail: Optional[TrailEntry] = None,
                   to_fallback: Optional[str] = None) -> delivery.DeliveryResult:
        """Send fresh copies as usual and copies in doubt in their own transaction, marked; note them in `trail`."""
        fresh = [r for r in rcpts if r not in doubtful]
        again = [r for r in rcpts if r in doubtful]
        outcome = delivery.DeliveryResult()
        for part, marked in ((fresh, False), (again, True)):
            if not part:
                continue
            one = self._send(key, spooled, sender, part, via, refused, redelivered=marked)
            if trail is not None:
                trail.note_result(one.accepted, one.reply, one.deferred, one.rejected, to_fallback, marked)
            outcome.accepted += one.accepted
            outcome.deferred.update(one.deferred)
            outcome.rejected.update(one.rejected)
            outcome.doubt = outcome.doubt or one.doubt
            outcome.reply = one.reply
        return outcome

    def _send(self, key: Key, spooled: spool.Spooled, sender: str, rcpts: List[str], via: str,
              refused: Optional[Dict[str, str]] = None, redelivered: bool = False) -> delivery.DeliveryResult:
        prefix = self._trace_headers(key, spooled, rcpts, refused, redelivered)
        rewritten = headers.rewrite_for_reinjection(spooled.header)

        def chunks() -> Any:
            yield prefix
            yield rewritten
            yield from spooled.body_chunks()

        digest = spooled.dedup_digest()
        noted: List[str] = []  # the copies durably noted as 'sending' for this transaction

        def before_dot(accepted: List[str]) -> None:
            handover.enter()
            try:
                self.store.begin_sending(key, accepted, via, str(spooled.path) if spooled.path else "", digest)
                noted.extend(accepted)
                checkpoint("after_note")
            except BaseException:
                handover.leave()
                raise

        target = self.config.delivery
        outcome = self._session().deliver(sender, rcpts, chunks, before_dot, handover.leave)
        if outcome.unreachable:
            # No point fetching the rest of the mailbox: end the run, everything stays on the server.
            raise ConnectError(f"cannot hand mail to {target.host}:{target.port}: {outcome.reply}")
        doubt: List[str] = []
        if outcome.doubt:
            doubt = [r for r in noted if r not in outcome.accepted]
            log.warning("%s: connection to %s:%d lost after the end of a message (%s); it is sent again, marked "
                        "as a possible duplicate (a duplicate is possible, a loss is not)", self.account.name,
                        target.host, target.port, outcome.reply)
        checkpoint("after_data")
        ledger = outcome.accepted if via == "route" else [rcpts[0]] if outcome.accepted else []
        taken = set(outcome.accepted)  # a set: lists may hold thousands of recipients
        in_doubt = set(doubt)
        failed = [r for r in rcpts if r not in taken and r not in in_doubt]
        self.store.finish_sending(key, {r: outcome.reply for r in outcome.accepted}, failed, digest, ledger,
                                  doubt=doubt, redelivered=redelivered)
        if redelivered and outcome.accepted:
            self._count("redelivered", len(outcome.accepted))
        return outcome

    def _trace_headers(self, key: Key, spooled: spool.Spooled, rcpts: List[str],
                       refused: Optional[Dict[str, str]], redelivered: bool = False) -> bytes:
        """Our Received trace line, the loop marker (bound to the Message-ID), and (for fallback copies) why."""
        ident = hashlib.sha256("/".join(key).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        second = int(time.time())
        if self._date[0] != second:  # one date per second, not one per message
            self._date = (second, email.utils.formatdate(second, localtime=False, usegmt=True))
        date = self._date[1]
        source = self._received_from
        received = (f"Received: from {source} by {self.hostname} (SmartPop {__version__})\r\n"
                    f"\twith {self.account.protocol.upper()} id {ident}")
        if len(rcpts) == 1:
            received += f"\r\n\tfor <{rcpts[0]}>"
        marker = recipients.loop_marker(self.policy.loop_key, recipients.message_id_of(spooled.fields))
        lines = [received + f"; {date}", f"{headers.LOOP_HEADER}: {marker}"]
        if redelivered:
            lines.append(f"{REDELIVERED_HEADER}: possible duplicate; an earlier hand-over of this copy to MailPlus "
                         "was interrupted, so SmartPop cannot know whether it arrived")
        notes = list((refused or {}).items())
        for rcpt, why in notes[:FALLBACK_NOTES]:
            lines.append(f"X-SmartPop-Fallback: {headers.safe_header_text(rcpt, 320)} refused: "
                         f"{headers.safe_header_text(why)}")
        if len(notes) > FALLBACK_NOTES:
            lines.append(f"X-SmartPop-Fallback: and {len(notes) - FALLBACK_NOTES} more recipients (see the log)")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def run_account(paths: Paths, config: Config, account: Account, progress: Optional[Progress] = None,
                stop: Optional[threading.Event] = None, lock_timeout: float = 0,
                stores: Optional[StorePool] = None) -> AccountResult:
    """One pass over `account` under its lock; errors end up in the result, never raised.

    With `stores` (the daemon's) the state store stays open after the run for the next one.
    """
    spool.make_spool_dir(paths.spool)
    paths.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with fsutil.locked(lock_path(paths, account.name), timeout=lock_timeout):
            return _run_locked(paths, config, account, progress, stop, stores)
    except LockBusy:
        log.info("%s: another SmartPop run is working on this mailbox; skipped", account.name)
        return AccountResult(account.name, skipped=True)


def _state_failed(paths: Paths, config: Config, account: Account, exc: StateError) -> None:
    """Tell the admin at once: with the state unwritable, status.json and the store cannot say it."""
    log.error("%s: the collection state could not be written (%s); this run stopped before deleting anything "
              "on the server, its mail stays there and is delivered once space is free", account.name, exc)
    try:
        from smartpop import alerts

        alerts.notify(paths, config, "state_write", f"SmartPop cannot write its state ({account.name})",
                      f"SmartPop stopped collecting {account.name} because it cannot write its state in {paths.data} "
                      f"({exc}). The volume may be full. No mail is lost: it stays at the provider and is "
                      "collected once the problem is fixed.", key=account.name)
    except Exception:  # an alert channel must never turn a stopped run into a crash
        log.exception("%s: alert about the state failure could not be sent", account.name)


def _run_locked(paths: Paths, config: Config, account: Account, progress: Optional[Progress],
                stop: Optional[threading.Event], stores: Optional[StorePool] = None) -> AccountResult:
    try:
        store = stores.acquire() if stores is not None else Store(paths.state_db)
        store.run_started(account.name)
    except StateError as exc:
        _state_failed(paths, config, account, exc)
        return AccountResult(account.name, ok=False, error=str(exc))
    run = AccountRun(paths, config, account, store, progress, stop)
    result = run.result
    source: Optional[Source] = None
    try:
        run.recover()
        run._progress("connect", 0, 0)
        source = open_source(account, NETWORK_TIMEOUT)
        try:
            run.run(source)
        finally:
            run.close_sessions()
        checkpoint("before_quit")
        current, source = source, None
        current.finish()
        for ref, why in getattr(current, "failed_deletes", []):
            # The record says done, so the next run deletes it again.
            result.deleted -= 1
            result.remaining += 1
            result.problems.append(f"DELE {ref} refused: {why}")
    except StateError as exc:
        # Nothing more is deleted on the server: a DELE only follows a durable record.
        result.ok, result.error = False, str(exc)
        _state_failed(paths, config, account, exc)
    except TemporaryError as exc:
        result.ok, result.error = False, str(exc)
    except SmartPopError as exc:
        result.ok, result.error = False, str(exc)
    except Exception as exc:  # one broken account must not stop the others
        log.exception("%s: unexpected error", account.name)
        result.ok, result.error = False, f"unexpected error: {exc.__class__.__name__}: {exc}"
    finally:
        if source is not None:
            source.abort()
    if result.error:
        log.error("%s: %s", account.name, result.error)
    elif result.problems:
        result.ok = False
        result.error = f"{len(result.problems)} message(s) could not be placed yet; last: {result.problems[-1]}"
    outcome = "changed"
    try:
        outcome = store.run_finished(account.name, result.ok, result.collected, result.fallback, result.error,
                                     result.waiting)
        if stores is not None:
            stores.release(store)
        else:
            store.close()
    except StateError as exc:
        # The state could not be written (full volume, I/O error): the mail stays on the server.
        if result.ok:
            result.ok, result.error = False, str(exc)
            _state_failed(paths, config, account, exc)
        with contextlib.suppress(Exception):
            store.close()  # closes both connections even when its final commit fails
    run._progress("done", result.collected, result.collected + (result.waiting or 0))
    # A run that found nothing and changed nothing is not logged: on a NAS whose disks
    # hibernate, a line per poll would wake them (the daemon logs an hourly summary instead).
    quiet = outcome != "changed" and not (result.collected or result.fallback or result.duplicates
                                          or result.redelivered or result.deleted or result.error or result.problems)
    result.quiet = quiet
    log.log(logging.DEBUG if quiet else logging.INFO,
            "%s: %d collected (%d to fallback, %d duplicate copies skipped, %d copies in doubt delivered again), "
            "%d deleted on the server, %s waiting", account.name, result.collected, result.fallback, result.duplicates,
            result.redelivered, result.deleted, "unknown" if result.waiting is None else result.waiting)
    return result


__all__ = ["AccountResult", "ProtocolError", "checkpoint", "run_account"]
