"""One collection pass for one account: retrieve -> deliver (250) -> record -> delete.

Order per message (DESIGN.md "Collection semantics"):
1. skip what the store marks done (delete it now if due), else RETR/FETCH into the spool;
2. route; drop recipients already placed (this message's journal) or already served
   (the multidrop ledger);
3. note the copies as 'sending' (durable), send the DATA dot, then record the reply;
   5xx copies go to the fallback recipient in a second transaction; 4xx stay pending;
4. once every recipient is placed, mark the message done (durable), then DELE / \\Deleted;
5. QUIT / UID EXPUNGE commits the deletions at the end.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from smartpop import __version__, fsutil
from smartpop.collector import delivery, headers, recipients, spool
from smartpop.collector.source import RemoteMessage, Source, open_source
from smartpop.collector.state import Key, Store, lock_path
from smartpop.config.schema import Account, Config
from smartpop.errors import AuthError, ConnectError, LockBusy, ProtocolError, SmartPopError, TemporaryError
from smartpop.paths import Paths

log = logging.getLogger(__name__)

Progress = Callable[[Dict[str, Any]], None]

# Test seam: called at each step boundary with its name; the crash tests install a hook that
# SIGKILLs the process there. In production it does nothing.
def _no_checkpoint(step: str) -> None:
    """Production: step boundaries are just boundaries."""


checkpoint: Callable[[str], None] = _no_checkpoint

# A message nobody could take (even the fallback refused it) is retried at most this often.
UNPLACEABLE_RETRY = 3600.0
NETWORK_TIMEOUT = 120.0


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
    waiting: Optional[int] = None
    remaining: int = -1
    error: Optional[str] = None
    problems: List[str] = field(default_factory=list)


def policy_for(config: Config, account: Account) -> recipients.RoutingPolicy:
    """The routing facts of `account` under `config`."""
    user = account.username.lower()
    # The catch-all's own address never names a real recipient. A login without a domain
    # (some providers use "m0123456" or "sammel") is taken as local part in each local domain.
    own = (user,) if "@" in user else tuple(f"{user}@{domain}" for domain in config.local_domains)
    return recipients.RoutingPolicy(
        mode=account.mode, local_domains=tuple(config.local_domains), aliases=dict(config.aliases),
        fallback=config.fallback_recipient, deliver_to=account.deliver_to, own_addresses=own,
        loop_tokens=loop_tokens(config))


def loop_tokens(config: Config) -> Tuple[str, ...]:
    """What our loop marker says: the installation's mail domains."""
    domains = list(config.local_domains)
    for account in config.accounts:
        if account.deliver_to:
            domains.append(account.deliver_to.rpartition("@")[2])
    if config.fallback_recipient:
        domains.append(config.fallback_recipient.rpartition("@")[2])
    return tuple(sorted(set(domains)))


def return_path(fields: List[headers.Field]) -> str:
    """MAIL FROM from the topmost Return-Path; '' (null sender) when absent or broken."""
    value = headers.first(fields, "return-path")
    if value is None:
        return ""
    text = value.strip()
    if text.startswith("<") and ">" in text:
        text = text[1:text.index(">")]
    if text == "":
        return ""
    return recipients.normalise(text) or ""


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
        self.policy = policy_for(config, account)
        self.result = AccountResult(account.name)
        # gethostname, not getfqdn: a reverse DNS lookup can hang on a NAS with broken DNS.
        self.hostname = socket.gethostname() or "localhost"

    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            try:
                self.progress({"account": self.account.name, "phase": phase, "done": done, "total": total})
            except Exception:  # a UI callback must never break collection
                log.exception("progress callback failed")

    def recover(self) -> None:
        """Settle copies a killed process left between the DATA dot and its record."""
        rows = self.store.in_flight(self.account.name)
        for row in rows:
            log.warning("%s: uid %s for %s was being handed over when the last run stopped; MailPlus most "
                        "likely has it, so it is not sent again (spool copy kept as doubt-*)",
                        self.account.name, row["uid"], row["rcpt"])
            if row["spool"]:
                source = Path(row["spool"])
                if source.exists():
                    os.replace(str(source), str(source.with_name("doubt-" + source.name)))
        if rows:
            self.store.resolve_in_flight(self.account.name)
        spool.clean(self.paths.spool, self.account.name)

    def run(self, source: Source) -> None:
        """Process every message of the mailbox."""
        account = self.account
        messages = source.list()
        folder = source.folder if source.protocol == "IMAP" else ""
        known = self.store.messages_of(account.name, folder, source.uidvalidity)
        total = len(messages)
        self._progress("list", 0, total)
        waiting = 0
        for index, message in enumerate(messages, 1):
            if self.stop is not None and self.stop.is_set():
                log.info("%s: stop requested; %d message(s) left for the next run", account.name, total - index + 1)
                waiting += total - index + 1
                break
            key = Key(account.name, folder, source.uidvalidity, message.uid)
            row = known.get(message.uid)
            if row is not None and row.state == "done":
                if self._delete_due(row.done_at):
                    source.delete(message.ref)
                    self.result.deleted += 1
                continue
            if row is not None and row.next_try and row.next_try > time.time():
                waiting += 1
                continue
            self._progress("fetch", index - 1, total)
            if not self._process_safely(source, message, key):
                waiting += 1
        self._progress("commit", total, total)
        self.store.prune(account.name, folder, source.uidvalidity, {m.uid for m in messages})
        self.result.waiting = waiting
        self.result.remaining = total - self.result.deleted

    def _delete_due(self, done_at: Optional[float]) -> bool:
        if not self.account.keep_on_server:
            return True
        days = self.account.delete_after_days
        return days is not None and done_at is not None and time.time() - done_at >= days * 86400

    def _process_safely(self, source: Source, message: RemoteMessage, key: Key) -> bool:
        """Like _process, but a problem with this one message never stops the run."""
        try:
            return self._process(source, message, key)
        except (ConnectError, AuthError, LockBusy):
            raise  # the session or MailPlus is gone: end the run
        except ProtocolError as exc:
            # e.g. the message vanished or RETR was refused: the session itself still works.
            log.warning("%s: uid %s skipped this run: %s", self.account.name, message.uid, exc)
            self.result.problems.append(str(exc))
            return False
        except Exception as exc:
            log.exception("%s: uid %s could not be handled; it stays on the server", self.account.name, message.uid)
            self.store.note_attempt(key, "", "", message.size, f"{exc.__class__.__name__}: {exc}", UNPLACEABLE_RETRY)
            self.result.problems.append(f"uid {message.uid}: {exc.__class__.__name__}: {exc}")
            return False

    def _process(self, source: Source, message: RemoteMessage, key: Key) -> bool:
        """Handle one message; True when it is fully placed."""
        writer = spool.SpoolWriter(self.paths.spool, spool.tempfile_prefix(self.account.name))
        try:
            source.fetch(message.ref, writer.write)
        except BaseException:
            writer.discard()
            raise
        spooled = writer.close()
        try:
            checkpoint("after_retr")
            return self._place(source, message, key, spooled)
        finally:
            spooled.remove()

    def _place(self, source: Source, message: RemoteMessage, key: Key, spooled: spool.Spooled) -> bool:
        name = self.account.name
        decision = recipients.decide(spooled.fields, self.policy)
        msgid = spooled.message_id or "(no Message-ID)"
        log.info("%s: message %s uid %s: rule %s -> %s; %s", name, msgid, message.uid, decision.rule,
                 ", ".join(decision.recipients) or "nobody", decision.detail)
        digest = spooled.dedup_digest()
        if not decision.recipients:
            error = "no recipient and no fallback_recipient configured"
            log.error("%s: message %s uid %s kept on the server: %s", name, msgid, message.uid, error)
            self.store.note_attempt(key, spooled.message_id, digest, spooled.size, error, UNPLACEABLE_RETRY)
            self.result.problems.append(error)
            return False
        placed = self.store.placed(key)
        todo = [r for r in decision.recipients if r not in placed]
        dupes = self.store.in_ledger(digest, todo)
        if dupes:
            log.info("%s: message %s uid %s: already delivered to %s from another copy; not sent again",
                     name, msgid, message.uid, ", ".join(sorted(dupes)))
            self.store.record_duplicate(key, sorted(dupes))
            self.result.duplicates += len(dupes)
            todo = [r for r in todo if r not in dupes]
        sender = return_path(spooled.fields)
        used_fallback = decision.rule in ("fallback", "loop")
        unplaced: Dict[str, str] = {}
        deferred: Dict[str, str] = {}
        if todo:
            outcome = self._send(key, spooled, sender, todo, decision, via="route")
            deferred.update(outcome.deferred)
            unplaced.update(outcome.rejected)
        if unplaced:
            fallback = self.config.fallback_recipient
            if fallback and self.store.in_ledger(digest, [fallback]):
                self.store.record_duplicate(key, sorted(unplaced))
                log.info("%s: message %s: refused for %s; the fallback %s already has it", name, msgid,
                         ", ".join(sorted(unplaced)), fallback)
                unplaced = {}
            elif fallback:
                log.warning("%s: message %s refused for %s; sending that copy to the fallback %s", name, msgid,
                            "; ".join(f"{r} ({why})" for r, why in unplaced.items()), fallback)
                outcome = self._send(key, spooled, sender, [fallback], decision, via="fallback",
                                     refused=unplaced)
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
            self.store.note_attempt(key, spooled.message_id, digest, spooled.size, error, retry)
            self.result.deferred += 1
            self.result.problems.append(error)
            return False
        self.store.mark_done(key, spooled.message_id, digest, spooled.size)
        checkpoint("after_record")
        self.result.collected += 1
        if used_fallback:
            self.result.fallback += 1
        if not self.account.keep_on_server:
            source.delete(message.ref)
            self.result.deleted += 1
            checkpoint("after_dele")
        return True

    def _send(self, key: Key, spooled: spool.Spooled, sender: str, rcpts: List[str],
              decision: recipients.RoutingDecision, via: str,
              refused: Optional[Dict[str, str]] = None) -> delivery.DeliveryResult:
        prefix = self._trace_headers(key, rcpts, refused)
        rewritten = headers.rewrite_for_reinjection(spooled.header)

        def chunks() -> Any:
            yield prefix
            yield rewritten
            yield from spooled.body_chunks()

        digest = spooled.dedup_digest()

        def before_dot(accepted: List[str]) -> None:
            self.store.begin_sending(key, accepted, via, str(spooled.path), digest)

        target = self.config.delivery
        outcome = delivery.deliver(target.host, target.port, sender, rcpts, chunks, before_dot,
                                   timeout=NETWORK_TIMEOUT, helo=self.hostname)
        if outcome.unreachable:
            # No point fetching the rest of the mailbox: end the run, everything stays on the server.
            raise ConnectError(f"cannot hand mail to {target.host}:{target.port}: {outcome.reply}")
        if outcome.doubt:
            log.warning("%s: connection to %s:%d lost after the end of a message (%s); it is sent again next "
                        "run (a duplicate is possible, a loss is not)", self.account.name, target.host, target.port,
                        outcome.reply)
        checkpoint("after_data")
        ledger = outcome.accepted if via == "route" else [rcpts[0]] if outcome.accepted else []
        failed = [r for r in rcpts if r not in outcome.accepted]
        self.store.finish_sending(key, {r: outcome.reply for r in outcome.accepted}, failed, digest, ledger)
        return outcome

    def _trace_headers(self, key: Key, rcpts: List[str], refused: Optional[Dict[str, str]]) -> bytes:
        """Our Received trace line, the loop marker, and (for fallback copies) why."""
        ident = hashlib.sha256("/".join(key).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        date = email.utils.formatdate(localtime=False, usegmt=True)
        source = headers.safe_header_text(self.account.host, 100)
        received = (f"Received: from {source} by {self.hostname} (SmartPop {__version__})\r\n"
                    f"\twith {self.account.protocol.upper()} id {ident}")
        if len(rcpts) == 1:
            received += f"\r\n\tfor <{rcpts[0]}>"
        lines = [received + f"; {date}", f"{headers.LOOP_HEADER}: {' '.join(self.policy.loop_tokens)}"]
        for rcpt, why in (refused or {}).items():
            lines.append(f"X-SmartPop-Fallback: {rcpt} refused: {headers.safe_header_text(why)}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def run_account(paths: Paths, config: Config, account: Account, progress: Optional[Progress] = None,
                stop: Optional[threading.Event] = None, lock_timeout: float = 0) -> AccountResult:
    """One pass over `account` under its lock; errors end up in the result, never raised."""
    spool.make_spool_dir(paths.spool)
    paths.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with fsutil.locked(lock_path(paths, account.name), timeout=lock_timeout):
            return _run_locked(paths, config, account, progress, stop)
    except LockBusy:
        log.info("%s: another SmartPop run is working on this mailbox; skipped", account.name)
        return AccountResult(account.name, skipped=True)


def _run_locked(paths: Paths, config: Config, account: Account, progress: Optional[Progress],
                stop: Optional[threading.Event]) -> AccountResult:
    store = Store(paths.state_db)
    run = AccountRun(paths, config, account, store, progress, stop)
    result = run.result
    store.run_started(account.name)
    source: Optional[Source] = None
    try:
        run.recover()
        run._progress("connect", 0, 0)
        source = open_source(account, NETWORK_TIMEOUT)
        run.run(source)
        checkpoint("before_quit")
        current, source = source, None
        current.finish()
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
    try:
        store.run_finished(account.name, result.ok, result.collected, result.fallback, result.error, result.waiting)
    finally:
        store.close()
    run._progress("done", result.collected, result.collected + (result.waiting or 0))
    log.info("%s: %d collected (%d to fallback, %d duplicate copies skipped), %d deleted on the server, "
             "%s waiting", account.name, result.collected, result.fallback, result.duplicates, result.deleted,
             "unknown" if result.waiting is None else result.waiting)
    return result


__all__ = ["AccountResult", "ProtocolError", "checkpoint", "run_account"]
