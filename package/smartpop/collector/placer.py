"""Placing one spooled message: route it, hand its copies to MailPlus, record what became of them.

The rules are placement's (pure); this module does their I/O, in the order the durability
rules need (docs/COLLECTION.md): a copy is noted as 'sending' (durable) before its dot, its
reply is recorded after it, and a message counts as placed only once every recipient has a
recorded 250 (or the fallback took its copy). Any delivery worker thread of a run calls
place(); each thread has its own SMTP connection to MailPlus, kept for the whole run.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any, Dict, List, Optional, Protocol, Set

from smartpop.collector import delivery, headers, loopkey, mailboxcheck, placement, recipients, spool, trace
from smartpop.collector.concurrency import Guards
from smartpop.collector.policy import delivery_domains, policy_for
from smartpop.collector.source import RemoteMessage
from smartpop.collector.state import Store
from smartpop.collector.staterows import Key
from smartpop.config.schema import Account, Config
from smartpop.errors import ConnectError
from smartpop.health import roundtrip
from smartpop.paths import Paths
from smartpop.trail.record import TrailEntry

# The runner's name, not this module's: these per-message lines have always been the runner's,
# and the Logs page (its source column) and admins' log filters know them by it.
log = logging.getLogger("smartpop.collector.runner")


class Tally(Protocol):
    """Where a run counts what happened to its messages (AccountRun; any thread)."""

    def count(self, name: str, amount: int = 1) -> None:
        """Add `amount` to the result's counter `name`."""

    def problem(self, text: str) -> None:
        """Note a message that could not be placed yet."""


class Placer:
    """Routes and hands over the messages of one account run."""

    def __init__(self, paths: Paths, config: Config, account: Account, store: Store, guards: Guards,
                 tally: Tally, hostname: str, timeout: float) -> None:
        self.paths = paths
        self.config = config
        self.account = account
        self.store = store
        self.policy = policy_for(config, account, loopkey.load_or_create(paths))
        self.domains = delivery_domains(config)
        self._guards = guards
        self._tally = tally
        self._hostname = hostname
        self._timeout = timeout
        self._trace = trace.TraceLines(account.host, hostname, account.protocol, self.policy.loop_key)
        self._lock = threading.Lock()  # guards _sessions across worker threads
        self._sessions: List[delivery.SmtpSession] = []
        self._local = threading.local()

    def _session(self) -> delivery.SmtpSession:
        """This thread's SMTP connection to MailPlus, opened on first use and kept for the run."""
        session: Optional[delivery.SmtpSession] = getattr(self._local, "session", None)
        if session is None:
            target = self.config.delivery
            session = delivery.SmtpSession(target.host, target.port, self._timeout, self._hostname,
                                           domains=self.domains)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close_sessions(self) -> None:
        """QUIT every SMTP connection of this run."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def place(self, message: RemoteMessage, key: Key, spooled: spool.Spooled, journalled: bool) -> Optional[int]:
        """Route and hand over one message; the number of its queued 'done' record, None if not placed.

        `journalled`: the message has journal entries from an earlier run (else nothing of it is placed yet).
        """
        if roundtrip.consume(self.paths, spooled.fields, self.account.name):
            # The Health page's test message: recorded done (so deleted) like any placed message, delivered to nobody.
            trail = self._trail(spooled, "round trip", "the Health page's test message, taken back by SmartPop")
            trail.outcome = "consumed"
            return self.store.mark_done(key, spooled.message_id, spooled.dedup_digest(), spooled.size, message.size,
                                        trail=trail)
        decision = recipients.decide(spooled.fields, self.policy)
        if any(mailboxcheck.NO_SMTPUTF8 in why for _, why in decision.refused) and self._session().offers_smtputf8():
            # Only now is it worth asking MailPlus: the exact non-ASCII address beats the fallback.
            decision = recipients.decide(spooled.fields, replace(self.policy, smtputf8=True))
        with self._guards.digests.one_at_a_time(spooled.dedup_digest()):
            return self._place_routed(message, key, spooled, decision, journalled)

    def _place_routed(self, message: RemoteMessage, key: Key, spooled: spool.Spooled,
                      decision: recipients.RoutingDecision, journalled: bool) -> Optional[int]:
        """place() under the digest's lock: the placement rules with the store, MailPlus, the trail and the log."""
        name = self.account.name
        msgid = spooled.message_id or "(no Message-ID)"
        log.info("%s: message %s uid %s: rule %s -> %s; %s", name, msgid, message.uid, decision.rule,
                 ", ".join(decision.recipients) or "nobody", decision.detail)
        if decision.refused:
            log.warning("%s: message %s uid %s: not a plain local mailbox, so the copy goes to the fallback: %s",
                        name, msgid, message.uid, "; ".join(f"{a!r} ({why})" for a, why in decision.refused))
        trail = self._trail(spooled, decision.rule, decision.detail)
        trail.add([a for a, _ in decision.refused], "refused")
        if not decision.recipients:
            log.error("%s: message %s uid %s kept on the server: %s", name, msgid, message.uid, placement.NOBODY)
            trail.detail += f"; {placement.NOBODY}"
            self._keep(key, spooled, trail, placement.NOBODY, placement.UNPLACEABLE_RETRY)
            return None
        placed = self.store.placed(key) if journalled else {}
        doubtful = self.store.in_doubt(key) if journalled else set()
        plan = placement.plan(decision, self.policy, placed)
        for rcpt, kind in plan.earlier:
            trail.add([rcpt], kind, "placed by an earlier run")
        todo = self._drop_served(message, key, spooled, plan.todo, trail)
        state = placement.Placement(used_fallback=plan.stands_in)
        if todo:
            state.routed(self._hand_over(key, spooled, todo, doubtful, via="route", trail=trail,
                                         to_fallback=plan.to_fallback))
        if state.needs_fallback(self.policy.fallback):
            self._to_fallback(key, spooled, state, doubtful, trail)
        kept = state.verdict()
        if kept is not None:
            log.log(logging.ERROR if kept.refused else logging.WARNING,
                    "%s: message %s uid %s stays on the server (%s): %s", name, msgid, message.uid,
                    "nobody would take it" if kept.refused else "temporary failure, retried next run", kept.error)
            self._keep(key, spooled, trail, kept.error, kept.retry)
            self._tally.count("deferred")
            return None
        # Queued, not committed: the provider thread commits it before the DELE (AccountRun._delete_ready).
        trail.settle(placed=True, fallback=state.used_fallback)
        done = self.store.mark_done(key, spooled.message_id, spooled.dedup_digest(), spooled.size, message.size,
                                    fallback=state.used_fallback, trail=trail)
        self._tally.count("collected")
        if state.used_fallback:
            self._tally.count("fallback")
        return done

    def _keep(self, key: Key, spooled: spool.Spooled, trail: TrailEntry, error: str, retry: float) -> None:
        """Leave the message on the server: note the attempt (tried again after `retry` seconds, 0: next run)."""
        trail.settle(placed=False)
        self.store.note_attempt(key, spooled.message_id, spooled.dedup_digest(), spooled.size, error, retry,
                                trail=trail)
        self._tally.problem(error)

    def _drop_served(self, message: RemoteMessage, key: Key, spooled: spool.Spooled, todo: List[str],
                     trail: TrailEntry) -> List[str]:
        """`todo` less the recipients the ledger says have this message from another copy (recorded as duplicates)."""
        dupes = self.store.in_ledger(spooled.dedup_digest(), todo)
        if not dupes:
            return todo
        log.info("%s: message %s uid %s: already delivered to %s from another copy; not sent again",
                 self.account.name, spooled.message_id or "(no Message-ID)", message.uid, ", ".join(sorted(dupes)))
        self.store.record_duplicate(key, sorted(dupes))
        trail.add(sorted(dupes), "duplicate", "already delivered from another copy of this message")
        self._tally.count("duplicates", len(dupes))
        return placement.without(todo, dupes)

    def _to_fallback(self, key: Key, spooled: spool.Spooled, state: placement.Placement, doubtful: Set[str],
                     trail: TrailEntry) -> None:
        """Give the copies MailPlus refused to the fallback recipient, unless it has this message already."""
        name, msgid = self.account.name, spooled.message_id or "(no Message-ID)"
        fallback = self.policy.fallback or ""
        if self.store.in_ledger(spooled.dedup_digest(), [fallback]):
            refused = state.fallback_has_it()
            self.store.record_duplicate(key, refused)
            trail.add([fallback], "duplicate", "the fallback mailbox already has this message")
            log.info("%s: message %s: refused for %s; the fallback %s already has it", name, msgid,
                     ", ".join(refused), fallback)
            return
        log.warning("%s: message %s refused for %s; sending that copy to the fallback %s", name, msgid,
                    "; ".join(f"{r} ({why})" for r, why in state.unplaced.items()), fallback)
        outcome = self._hand_over(key, spooled, [fallback], doubtful, via="fallback", refused=state.unplaced,
                                  trail=trail, to_fallback=fallback)
        refused = state.fallback_sent(outcome)
        if refused:
            self.store.record_duplicate(key, refused)

    def _trail(self, spooled: spool.Spooled, rule: str, detail: str) -> TrailEntry:
        """A trail entry with what the message's header says (the subject only when trail.subjects is on)."""
        fields = spooled.fields
        subject = headers.first(fields, "subject") if self.config.trail.subjects else None
        return TrailEntry(
            message_id=spooled.message_id, sender=trace.return_path(fields),
            from_addr=trace.address_in(trace.header_text(headers.first(fields, "from"))),
            subject=None if subject is None else trace.header_text(subject), rule=rule, detail=detail,
            size=spooled.size)

    def _hand_over(self, key: Key, spooled: spool.Spooled, rcpts: List[str], doubtful: Set[str], via: str,
                   trail: TrailEntry, to_fallback: Optional[str], refused: Optional[Dict[str, str]] = None,
                   ) -> delivery.DeliveryResult:
        """Send fresh copies as usual and copies in doubt in their own transaction, marked; note them in `trail`."""
        outcome = delivery.DeliveryResult()
        for part, marked in zip(placement.split_doubt(rcpts, doubtful), (False, True)):
            if not part:
                continue
            # MAIL FROM: the Return-Path the trail entry already worked out (one header scan per message).
            one = self._send(key, spooled, trail.sender, part, via, refused, redelivered=marked)
            trail.note_result(one.accepted, one.reply, one.deferred, one.rejected, to_fallback, marked)
            outcome.absorb(one)
            outcome.reply = one.reply
        return outcome

    def _send(self, key: Key, spooled: spool.Spooled, sender: str, rcpts: List[str], via: str,
              refused: Optional[Dict[str, str]] = None, redelivered: bool = False) -> delivery.DeliveryResult:
        """One SMTP transaction: note the copies 'sending' just before the dot, record the reply after it."""
        prefix = self._trace.lines(key, spooled.fields, rcpts, refused, redelivered)
        rewritten = headers.rewrite_for_reinjection(spooled.header)

        def chunks() -> Any:
            yield prefix
            yield rewritten
            yield from spooled.body_chunks()

        digest = spooled.dedup_digest()
        noted: List[str] = []  # the copies durably noted as 'sending' for this transaction
        handover, checkpoint = self._guards.handover, self._guards.checkpoint

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
        result = placement.sent(rcpts, noted, outcome, via)
        if outcome.doubt:
            log.warning("%s: connection to %s:%d lost after the end of a message (%s); it is sent again, marked "
                        "as a possible duplicate (a duplicate is possible, a loss is not)", self.account.name,
                        target.host, target.port, outcome.reply)
        checkpoint("after_data")
        self.store.finish_sending(key, {r: outcome.reply for r in outcome.accepted}, result.failed, digest,
                                  result.ledger, doubt=result.doubt, redelivered=redelivered)
        if redelivered and outcome.accepted:
            self._tally.count("redelivered", len(outcome.accepted))
        return outcome
