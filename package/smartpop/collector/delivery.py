"""SMTP hand-off to MailPlus: which recipients may be sent, and long recipient lists.

The connection and its transactions live in smtpconn.py, what a reply means in smtpreply.py.
This module adds the delivery rules on top: the plain-mailbox guard before any RCPT
(`screen`), Postfix's per-session error count, and asking first for a long list so that
thousands of unknown addresses cost seconds, not a hang-up. A transaction with a non-ASCII
recipient uses SMTPUTF8 (RFC 6531) where MailPlus offers it; all other transactions send
exactly what they sent before.
"""

from __future__ import annotations

import logging
import smtplib
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from smartpop.collector.mailboxcheck import NO_SMTPUTF8, safe_reason
from smartpop.collector.smtpconn import (
    SESSION_ERRORS,
    Body,
    SmtpConnection,
    failure_text,
    needs_smtputf8,
    not_sent,
    pipeline,
    utf8_split,
)
from smartpop.collector.smtpreply import DeliveryResult, Outcome, Reply, classify_reply
from smartpop.errors import ConnectError

__all__ = ["RCPT_MAX", "REFUSALS_MAX", "Body", "DeliveryResult", "Probe", "SmtpSession", "deliver_many",
           "needs_smtputf8", "probe", "probe_recipients", "screen"]

log = logging.getLogger(__name__)

# Recipients per transaction, well below Postfix's smtpd_recipient_limit (1000; beyond it every
# RCPT gets 452, and past the overshoot limit each one counts as an error).
RCPT_MAX = 100
# Refused RCPTs one message may cost. Postfix counts each as an error of the session: from
# smtpd_soft_error_limit (10) on it waits a second before every reply, at smtpd_hard_error_limit
# (20) it hangs up, and only a delivered message resets the count. The recipients of a larger
# list that are not asked once this many were refused get their copy via the fallback.
REFUSALS_MAX = 5


def screen(sender: str, recipients: Sequence[str], domains: Optional[Sequence[str]], smtputf8: bool = False
           ) -> Tuple[str, List[str], Dict[str, str]]:
    """(sender to use, recipients to send, refused recipient -> reply) under the plain-mailbox rule.

    The last guard before RCPT, whatever routing said: Postfix with the domain in
    mydestination rewrites "a%b@local" and "b!a@local" (allow_percent_hack, swap_bangpath)
    into outside addresses and relays them. A refused recipient gets a 5xx-like reply, so
    the runner sends that copy to the fallback (which passes this guard too, or stays put).
    `smtputf8` (MailPlus offers it) admits well-formed non-ASCII local parts, as in routing.
    The sender stays ASCII: a bounce address is not worth SMTPUTF8 for an ASCII transaction.
    """
    send: List[str] = []
    refused: Dict[str, str] = {}
    for rcpt in recipients:
        why = safe_reason(rcpt, domains, smtputf8)
        if why is None:
            send.append(rcpt)
        else:
            log.log(logging.WARNING if why == NO_SMTPUTF8 else logging.ERROR, "RCPT TO %r not sent: %s", rcpt, why)
            refused[rcpt] = not_sent(why)
    if sender and safe_reason(sender) is not None:
        # The sender only matters for bounces, which must not reach a rewritten address either.
        log.warning("MAIL FROM %r is not a plain address (%s); using <>", sender, safe_reason(sender))
        sender = ""
    return sender, send, refused


class SmtpSession(SmtpConnection):
    """The connection to MailPlus as the runner uses it: screened recipients, Postfix's error count, long lists."""

    def __init__(self, host: str, port: int, timeout: float = 300.0, helo: str = "smartpop.localdomain",
                 domains: Optional[Sequence[str]] = None) -> None:
        super().__init__(host, port, timeout, helo)
        # Every RCPT must be in these domains (None: only the local-part rule applies).
        self.domains = tuple(domains) if domains is not None else None
        # Refusals since the server last took a message: Postfix's error count, as far as we know it.
        self.errors = 0

    def deliver(self, sender: str, recipients: List[str], chunks: Callable[[], Iterable[bytes]],
                before_dot: Optional[Callable[[List[str]], None]] = None,
                after_dot: Optional[Callable[[], None]] = None) -> DeliveryResult:
        """Hand one message to the server for all `recipients` (one transaction).

        `before_dot` runs right before the terminating dot is written; once it returned,
        `after_dot` runs when that write is done (or failed). A recipient that is not a plain
        mailbox in `domains` is never sent: it comes back in `rejected` (see `screen`).
        """
        # Unreachable (None) screens as if offered: the transaction then defers the copy, and
        # checks the connection it actually gets before any non-ASCII RCPT.
        smtputf8 = needs_smtputf8(recipients) and self.offers_smtputf8() is not False
        sender, recipients, refused = screen(sender, recipients, self.domains, smtputf8)
        if not recipients:
            return DeliveryResult(rejected=refused, reply=next(iter(refused.values()), ""))
        if self.errors + REFUSALS_MAX >= 10:
            self.close()  # a fresh connection starts Postfix's error count at zero
        body = Body(chunks, before_dot, after_dot)
        if len(recipients) <= REFUSALS_MAX:
            result = self.transaction(sender, recipients, body)
            self.errors = 0 if result.accepted else self.errors + len(result.rejected) + len(result.deferred)
        else:
            result = deliver_many(self, sender, recipients, chunks, before_dot, after_dot)
        result.rejected.update(refused)
        return result


def deliver_many(session: SmtpSession, sender: str, recipients: List[str], chunks: Callable[[], Iterable[bytes]],
                 before_dot: Optional[Callable[[List[str]], None]] = None,
                 after_dot: Optional[Callable[[], None]] = None) -> DeliveryResult:
    """Deliver to a long recipient list: ask which are taken, then RCPT_MAX per transaction.

    Asking first (MAIL, RCPTs, RSET) stops at REFUSALS_MAX refusals, so a message with
    thousands of unknown addresses costs seconds, not a hang-up per run; the recipients not
    asked come back rejected (their copy goes to the fallback), never deferred forever.
    """
    result, taken, untried, lost = probe_recipients(session, sender, recipients)
    if lost:
        return result
    if untried:
        log.warning("%d of %d recipients not asked: %d were refused already", len(untried), len(recipients),
                    REFUSALS_MAX)
        why = f"550 5.5.3 not asked by SmartPop: {REFUSALS_MAX} other recipients of this message were refused"
        result.rejected.update({r: why for r in untried})
    refusals = len(result.rejected) + len(result.deferred) - len(untried)
    body = Body(chunks, before_dot, after_dot)
    for start in range(0, len(taken), RCPT_MAX):
        batch = taken[start:start + RCPT_MAX]
        part = session.transaction(sender, batch, body)
        result.absorb(part)
        result.reply = part.reply or result.reply
        refusals += len(part.rejected) + len(part.deferred)
        if part.accepted:
            refusals = 0
        if part.unreachable or part.doubt or (part.deferred and not session.is_open):
            # MailPlus went away: the rest waits for the next run (what was taken is recorded).
            rest = taken[start + RCPT_MAX:]
            result.deferred.update({r: part.reply for r in rest})
            result.unreachable = part.unreachable and not result.accepted
            break
    session.errors = refusals
    return result


class Probe(NamedTuple):
    """What asking the server about a recipient list found."""

    result: DeliveryResult  # the refused and deferred recipients
    taken: List[str]  # recipients the server accepted
    untried: List[str]  # recipients not asked (REFUSALS_MAX reached)
    lost: bool  # the connection failed: everything not refused is deferred


def probe_recipients(session: SmtpSession, sender: str, recipients: List[str]) -> Probe:
    """Ask (MAIL, RCPT..., RSET) which of `recipients` the server takes, up to REFUSALS_MAX refusals."""
    return session.on_connection(
        recipients, lambda smtp, reused: _ask(session, smtp, reused, sender, recipients),
        lambda unreachable: Probe(unreachable, [], [], True))


def _ask(session: SmtpSession, smtp: smtplib.SMTP, reused: bool, sender: str, recipients: List[str]
         ) -> Optional[Probe]:
    """probe_recipients() on one connection; None if a reused one was found dead before MAIL was answered."""
    result = DeliveryResult()
    heard: List[Reply] = []
    asked, unsent = utf8_split(smtp, recipients)
    result.rejected.update(unsent)
    params = " SMTPUTF8" if needs_smtputf8(asked) else ""
    smtp.command_encoding = "utf-8" if params else "ascii"  # as in a transaction: reset below
    try:
        mail = _mail(session, smtp, sender, params, heard)
        if mail.outcome is not Outcome.DONE:
            result.refuse(asked, mail)
            session.end_after(smtp, mail)
            return Probe(result, [], [], False)
        group_max = REFUSALS_MAX if smtp.has_extn("pipelining") else 1
        in_transaction = 0
        index = 0
        while index < len(asked):
            refused = len(result.rejected) + len(result.deferred) - len(unsent)  # unsent cost no error
            if refused >= REFUSALS_MAX:
                break
            if in_transaction >= RCPT_MAX:
                # Only asking: start over, so no transaction holds more than RCPT_MAX.
                session.reset(smtp)
                if not session.is_open:
                    raise smtplib.SMTPServerDisconnected("RSET failed")
                mail = _mail(session, smtp, sender, params, heard)
                if mail.outcome is not Outcome.DONE:
                    raise smtplib.SMTPServerDisconnected(mail.text)
                in_transaction = 0
            # At most as many in one write as may still be refused (RFC 2920 groups).
            group = asked[index:index + min(group_max, REFUSALS_MAX - refused, RCPT_MAX - in_transaction)]
            for rcpt, reply in zip(group, pipeline(smtp, [f"RCPT TO:<{r}>" for r in group], len(group), heard)):
                result.note_rcpt(rcpt, reply)
                in_transaction += reply.outcome is Outcome.DONE
                if reply.outcome is Outcome.CLOSING:
                    raise smtplib.SMTPServerDisconnected(reply.text)
            index += len(group)
        session.reset(smtp)
        taken, result.accepted = result.accepted, []
        return Probe(result, taken, asked[index:], False)
    except SESSION_ERRORS as exc:
        session.drop()
        if reused and not heard:
            return None  # a stale kept connection: once more on a fresh one
        result.lose(recipients, failure_text(exc, session.host, session.port, during=True))
        return Probe(result, [], [], True)
    finally:
        smtp.command_encoding = "ascii"


def _mail(session: SmtpSession, smtp: smtplib.SMTP, sender: str, params: str, heard: List[Reply]) -> Reply:
    """MAIL FROM, with the null sender when MailPlus refuses the sender (as in a transaction)."""
    mail = pipeline(smtp, [f"MAIL FROM:<{sender}>{params}"], 1, heard)[0]
    if mail.outcome is Outcome.PERMANENT and sender:
        log.warning("MAIL FROM:<%s> refused (%s); using <>", sender, mail.text)
        session.reset(smtp)
        if not session.is_open:
            raise smtplib.SMTPServerDisconnected("RSET failed")
        mail = pipeline(smtp, [f"MAIL FROM:<>{params}"], 1, heard)[0]
    return mail


def probe(host: str, port: int, timeout: float = 15.0) -> str:
    """Connect to the delivery target, EHLO and QUIT; return its first EHLO line (for `check`)."""
    try:
        with smtplib.SMTP(host, port, local_hostname="smartpop.localdomain", timeout=timeout) as smtp:
            reply = classify_reply(*smtp.ehlo())
            if reply.code != 250:
                raise ConnectError(f"{host}:{port} answered EHLO with {reply.text}")
            return reply.text.splitlines()[0]
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectError(failure_text(exc, host, port, during=False)) from exc
