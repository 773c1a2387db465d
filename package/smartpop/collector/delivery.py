"""SMTP hand-off to MailPlus: one transaction per message on a reused connection, streamed DATA.

smtplib's sendmail() wants the whole message in memory, so MAIL/RCPT go through smtplib
and the DATA body is streamed here (CRLF line ends, dot-stuffing). A hook runs right
before the terminating dot: that is where the runner makes its journal entry durable.
A transaction with a non-ASCII recipient uses SMTPUTF8 (RFC 6531) where MailPlus offers it;
all other transactions send exactly what they sent before.
"""

from __future__ import annotations

import logging
import select
import smtplib
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from smartpop.collector.recipients import NO_SMTPUTF8, safe_reason
from smartpop.collector.transport import describe, nodelay
from smartpop.errors import ConnectError

log = logging.getLogger(__name__)

SEND_BUFFER = 64 * 1024
# Recipients per transaction, well below Postfix's smtpd_recipient_limit (1000; beyond it every
# RCPT gets 452, and past the overshoot limit each one counts as an error).
RCPT_MAX = 100
# Refused RCPTs one message may cost. Postfix counts each as an error of the session: from
# smtpd_soft_error_limit (10) on it waits a second before every reply, at smtpd_hard_error_limit
# (20) it hangs up, and only a delivered message resets the count. The recipients of a larger
# list that are not asked once this many were refused get their copy via the fallback.
REFUSALS_MAX = 5


@dataclass
class DeliveryResult:
    """Per-recipient outcome of one SMTP transaction.

    `doubt` is set when the terminating dot was sent but no reply came back. The copies are
    then reported as deferred: a lost connection usually died before the dot arrived, and a
    possible duplicate is better than a possible loss.
    """

    accepted: List[str] = field(default_factory=list)
    deferred: Dict[str, str] = field(default_factory=dict)
    rejected: Dict[str, str] = field(default_factory=dict)
    doubt: bool = False
    reply: str = ""
    unreachable: bool = False


def _reply(code: int, message: bytes) -> str:
    return f"{code} {message.decode('utf-8', 'replace')}".replace("\n", " ")[:300]


def needs_smtputf8(recipients: Iterable[str]) -> bool:
    """True if any recipient has a non-ASCII local part (its transaction needs SMTPUTF8)."""
    return not all(rcpt.isascii() for rcpt in recipients)


def _not_sent(why: str) -> str:
    return f"550 5.1.3 not sent by SmartPop: {why}"


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
            refused[rcpt] = _not_sent(why)
    if sender and safe_reason(sender) is not None:
        # The sender only matters for bounces, which must not reach a rewritten address either.
        log.warning("MAIL FROM %r is not a plain address (%s); using <>", sender, safe_reason(sender))
        sender = ""
    return sender, send, refused


def _crlf(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Normalise line ends to CRLF and dot-stuff, on pieces that may split lines anywhere."""
    at_line_start = True
    pending_cr = False
    for raw in chunks:
        if not raw:
            continue
        piece = raw
        if pending_cr:
            piece = b"\r" + piece
            pending_cr = False
        if piece.endswith(b"\r"):
            piece, pending_cr = piece[:-1], True
            if not piece:
                continue
        # Bare LF -> CRLF without touching existing CRLF pairs.
        piece = piece.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if at_line_start and piece.startswith(b"."):
            piece = b"." + piece
        piece = piece.replace(b"\n.", b"\n..")
        at_line_start = piece.endswith(b"\n")
        yield piece
    if pending_cr:
        yield b"\r"
        at_line_start = False
    if not at_line_start:
        yield b"\r\n"


class SmtpSession:
    """One SMTP connection to MailPlus, reused for the transactions of a run.

    A new connection per message cost a TCP handshake, a greeting and an EHLO each time
    (2,001 connects for 2,000 messages in the 2026-11-28 profile). The connection is
    opened on first use and re-opened transparently when the server closed it in between
    (idle timeout, 421); a failure inside one transaction only affects that message.
    """

    def __init__(self, host: str, port: int, timeout: float = 300.0, helo: str = "smartpop.localdomain",
                 domains: Optional[Sequence[str]] = None) -> None:
        self.host, self.port = host, port
        # Every RCPT must be in these domains (None: only the local-part rule applies).
        self.domains = tuple(domains) if domains is not None else None
        self.timeout = timeout
        self.helo = helo
        self.connects = 0
        # Refusals since the server last took a message: Postfix's error count, as far as we know it.
        self.errors = 0
        self._smtp: Optional[smtplib.SMTP] = None
        self._after_dot: Optional[Callable[[], None]] = None

    def _open(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.helo, timeout=self.timeout)
        self.connects += 1
        try:
            assert smtp.sock is not None
            nodelay(smtp.sock)
            smtp.ehlo_or_helo_if_needed()
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp

    def _idle_connection(self) -> Optional[smtplib.SMTP]:
        """The open connection if it is still fit for a new transaction, else None."""
        smtp = self._smtp
        if smtp is None or smtp.sock is None:
            self._smtp = None
            return None
        try:
            # Between transactions the server only speaks to say goodbye (421 on its idle
            # timeout) or to close: anything readable means this connection is finished.
            readable = bool(select.select([smtp.sock], [], [], 0)[0])
        except (OSError, ValueError):
            readable = True
        if readable:
            self.drop()
            return None
        return smtp

    def offers_smtputf8(self) -> Optional[bool]:
        """Whether MailPlus announces SMTPUTF8 in its EHLO reply (connecting if needed); None if unreachable."""
        smtp = self._idle_connection()
        if smtp is None:
            try:
                smtp = self._open()
            except (OSError, smtplib.SMTPException):
                self._smtp = None
                return None
        return bool(smtp.has_extn("smtputf8"))

    def drop(self) -> None:
        """Close the connection without QUIT (after an error its state is unknown)."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        """QUIT and close; errors do not matter any more."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
            smtp.close()

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
        if len(recipients) <= REFUSALS_MAX:
            result = self._deliver(sender, recipients, chunks, before_dot, after_dot)
            self.errors = 0 if result.accepted else self.errors + len(result.rejected) + len(result.deferred)
        else:
            result = deliver_many(self, sender, recipients, chunks, before_dot, after_dot)
        result.rejected.update(refused)
        return result

    def _deliver(self, sender: str, recipients: List[str], chunks: Callable[[], Iterable[bytes]],
                 before_dot: Optional[Callable[[List[str]], None]],
                 after_dot: Optional[Callable[[], None]]) -> DeliveryResult:
        """deliver() for screened recipients."""
        self._after_dot = after_dot
        smtp = self._idle_connection()
        if smtp is not None:
            result = self._transaction(smtp, sender, recipients, chunks, before_dot, reused=True)
            if result is not None:
                return result
            # The reused connection died before the server answered MAIL: nothing of this
            # message was handed over, so trying once on a fresh connection is safe.
            self.drop()
        try:
            smtp = self._open()
        except (OSError, smtplib.SMTPException) as exc:
            text = describe(exc, self.host, self.port) if isinstance(exc, OSError) else str(exc)
            self._smtp = None
            return DeliveryResult(deferred={r: text for r in recipients}, reply=text, unreachable=True)
        result = self._transaction(smtp, sender, recipients, chunks, before_dot, reused=False)
        assert result is not None
        return result

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipients: List[str],
                     chunks: Callable[[], Iterable[bytes]], before_dot: Optional[Callable[[List[str]], None]],
                     reused: bool) -> Optional[DeliveryResult]:
        """One MAIL..DATA transaction, with SMTPUTF8 if a recipient needs it; None as in `_exchange`."""
        send, refused = _utf8_split(smtp, recipients)
        if not send:
            return DeliveryResult(rejected=refused, reply=next(iter(refused.values()), ""))
        utf8 = needs_smtputf8(send)
        if utf8:
            log.info("RCPT TO with a non-ASCII local part (%s): sent with SMTPUTF8 (MailPlus offers it)",
                     ", ".join(r for r in send if not r.isascii()))
        # smtplib encodes commands as ASCII unless told otherwise; only this transaction may use UTF-8.
        smtp.command_encoding = "utf-8" if utf8 else "ascii"
        try:
            result = self._exchange(smtp, sender, send, chunks, before_dot, reused, " SMTPUTF8" if utf8 else "")
        finally:
            smtp.command_encoding = "ascii"
        if result is not None:
            result.rejected.update(refused)
            result.reply = result.reply or next(iter(refused.values()), "")
        return result

    def _exchange(self, smtp: smtplib.SMTP, sender: str, recipients: List[str],
                  chunks: Callable[[], Iterable[bytes]], before_dot: Optional[Callable[[List[str]], None]],
                  reused: bool, params: str) -> Optional[DeliveryResult]:
        """One MAIL..DATA transaction (`params` after MAIL FROM); None if a reused connection was found dead at MAIL."""
        result = DeliveryResult()
        dot_sent = False
        mail_answered = False
        try:
            if smtp.has_extn("pipelining"):
                envelope = self._pipelined(smtp, sender, recipients, result, params)
                mail_answered = True
                if envelope is not None:
                    return envelope
            else:
                # docmd, not smtp.mail()/rcpt(): those run every address through email.utils'
                # parser (0.1 ms each in the profile); ours are normalised bare addresses already.
                code, message = smtp.docmd("MAIL", f"FROM:<{sender}>{params}")
                mail_answered = True
                if code >= 500 and sender:
                    # A sender MailPlus dislikes (e.g. a local address, "not logged in") must not
                    # block the message: the null sender can always be accepted and never bounces.
                    log.warning("MAIL FROM:<%s> refused (%s); using <>", sender, _reply(code, message))
                    smtp.rset()
                    code, message = smtp.docmd("MAIL", f"FROM:<>{params}")
                if code != 250:
                    return self._refused(result, recipients, code, message, reset=code != 421)
                for rcpt in recipients:
                    self._rcpt_reply(result, rcpt, *smtp.docmd("RCPT", f"TO:<{rcpt}>"))
                if not result.accepted:
                    self._reset(smtp)
                    return result
                code, message = smtp.docmd("DATA")
                if code != 354:
                    accepted, result.accepted = result.accepted, []
                    return self._refused(result, accepted, code, message, reset=code != 421)
            sock = smtp.sock
            assert sock is not None
            buffer = bytearray()
            for piece in _crlf(chunks()):
                buffer += piece
                if len(buffer) >= SEND_BUFFER:
                    sock.sendall(buffer)
                    buffer.clear()
            if buffer:
                sock.sendall(buffer)
            # Postfix says nothing during DATA unless it gives up: anything readable now (an
            # error reply or EOF) means the dot must not be sent.
            if select.select([sock], [], [], 0)[0]:
                code, message = smtp.getreply()
                text = _reply(code, message)
                target = result.rejected if 500 <= code < 600 else result.deferred
                target.update({r: text for r in result.accepted})
                result.accepted, result.reply = [], text
                self.drop()  # the server left DATA on its own: its state is unknown
                return result
            if before_dot is not None:
                before_dot(list(result.accepted))
            try:
                dot_sent = True
                # A write of its own, after the check above; TCP_NODELAY (set when the
                # connection was opened) sends this small segment at once instead of
                # holding it until the body's last segment is acknowledged.
                sock.sendall(b".\r\n")
            finally:
                if self._after_dot is not None:
                    self._after_dot()
            code, message = smtp.getreply()
            result.reply = _reply(code, message)
            if not 200 <= code < 600:
                # No readable reply to the dot (smtplib gives -1): MailPlus may or may not have it.
                result.doubt = True
                result.deferred.update({r: result.reply for r in result.accepted})
                result.accepted = []
                self.drop()
                return result
            if code != 250:
                target = result.rejected if code >= 500 else result.deferred
                target.update({r: result.reply for r in result.accepted})
                result.accepted = []
                if code == 421:
                    self.drop()
            # After the reply to the dot the server is back in its initial state
            # (RFC 5321 4.1.1.4), so the next MAIL needs no RSET.
            return result
        except (OSError, smtplib.SMTPException, socket.timeout) as exc:
            self.drop()
            if reused and not mail_answered:
                return None
            text = (describe(exc, self.host, self.port) if isinstance(exc, OSError)
                    else f"SMTP session with {self.host}:{self.port} ended: {exc}")
            result.doubt = dot_sent
            result.deferred.update({r: text for r in result.accepted})
            result.accepted = []
            for rcpt in recipients:
                if rcpt not in result.rejected:
                    result.deferred.setdefault(rcpt, text)
            result.reply = text
            return result
        except BaseException:
            # Anything else (the durable note before the dot failed on a full disk, a stop):
            # close at once. A QUIT later would sit inside the open DATA until the network
            # timeout, and without the dot Postfix discards what it got.
            self.drop()
            raise

    @staticmethod
    def _rcpt_reply(result: DeliveryResult, rcpt: str, code: int, message: bytes) -> None:
        if code in (250, 251):
            result.accepted.append(rcpt)
        elif code >= 500:
            result.rejected[rcpt] = _reply(code, message)
        else:
            result.deferred[rcpt] = _reply(code, message)
        if code == 421:
            raise smtplib.SMTPServerDisconnected(_reply(code, message))

    def _pipelined(self, smtp: smtplib.SMTP, sender: str, recipients: List[str],
                   result: DeliveryResult, params: str = "") -> Optional[DeliveryResult]:
        """MAIL, every RCPT and DATA in one write (RFC 2920); None once DATA got its 354.

        Saves two round trips per message. The replies come back in order; a refused MAIL
        makes the server refuse the rest too, and the transaction is reset.
        """
        for attempt in (sender, ""):
            lines = [f"MAIL FROM:<{attempt}>{params}"] + [f"RCPT TO:<{r}>" for r in recipients] + ["DATA"]
            smtp.send("\r\n".join(lines) + "\r\n")
            mail_code, mail_message = smtp.getreply()
            if mail_code == 421:
                return self._refused(result, recipients, mail_code, mail_message, reset=False)
            replies = [smtp.getreply() for _ in recipients]
            data_code, data_message = smtp.getreply()
            if data_code == 354:
                # Only a server ignoring RFC 2920 says 354 after refusing every recipient:
                # end that empty transaction at once; it has nobody to deliver to.
                if mail_code != 250 or not any(code in (250, 251) for code, _ in replies):
                    smtp.send(".\r\n")
                    smtp.getreply()
                    data_code = 503
            if mail_code == 250:
                break
            if mail_code >= 500 and attempt:
                # As in the lock-step path: a refused sender must not block the message.
                log.warning("MAIL FROM:<%s> refused (%s); using <>", attempt, _reply(mail_code, mail_message))
                self._reset(smtp)
                if self._smtp is None:
                    raise smtplib.SMTPServerDisconnected("RSET failed")
                continue
            return self._refused(result, recipients, mail_code, mail_message, reset=True)
        for rcpt, (code, message) in zip(recipients, replies):
            self._rcpt_reply(result, rcpt, code, message)
        if not result.accepted:
            self._reset(smtp)
            return result
        if data_code != 354:
            accepted, result.accepted = result.accepted, []
            return self._refused(result, accepted, data_code, data_message, reset=data_code != 421)
        return None

    def _refused(self, result: DeliveryResult, recipients: List[str], code: int, message: bytes,
                 reset: bool) -> DeliveryResult:
        text = _reply(code, message)
        target = result.rejected if code >= 500 else result.deferred
        target.update({r: text for r in recipients})
        result.reply = text
        if reset:
            assert self._smtp is not None
            self._reset(self._smtp)
        else:
            self.drop()  # 421: the server is closing this connection
        return result

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a transaction that ended before its dot; a connection that fails it is dropped."""
        try:
            code, _ = smtp.rset()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code != 250:
            self.drop()


def _utf8_split(smtp: smtplib.SMTP, recipients: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """(recipients to send, refused ones): non-ASCII ones are refused on a connection without SMTPUTF8.

    `deliver` screened against an earlier EHLO; a reconnect may reach a MailPlus that no longer offers it.
    """
    if not needs_smtputf8(recipients) or smtp.has_extn("smtputf8"):
        return recipients, {}
    refused = {r: _not_sent(NO_SMTPUTF8) for r in recipients if not r.isascii()}
    for rcpt in refused:
        log.warning("RCPT TO %r not sent: %s", rcpt, NO_SMTPUTF8)
    return [r for r in recipients if r.isascii()], refused


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
    for start in range(0, len(taken), RCPT_MAX):
        batch = taken[start:start + RCPT_MAX]
        part = session._deliver(sender, batch, chunks, before_dot, after_dot)
        result.accepted.extend(part.accepted)
        result.deferred.update(part.deferred)
        result.rejected.update(part.rejected)
        result.doubt = result.doubt or part.doubt
        result.reply = part.reply or result.reply
        refusals += len(part.rejected) + len(part.deferred)
        if part.accepted:
            refusals = 0
        if part.unreachable or part.doubt or (part.deferred and session._smtp is None):
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
    result = DeliveryResult()
    for attempt in (0, 1):
        reused = attempt == 0
        smtp = session._idle_connection() if reused else None
        if smtp is None:
            reused = False
            try:
                smtp = session._open()
            except (OSError, smtplib.SMTPException) as exc:
                text = describe(exc, session.host, session.port) if isinstance(exc, OSError) else str(exc)
                session._smtp = None
                return Probe(DeliveryResult(deferred={r: text for r in recipients}, reply=text, unreachable=True),
                             [], [], True)
        taken: List[str] = []
        mail_answered = False
        asked, unsent = _utf8_split(smtp, recipients)
        result.rejected.update(unsent)
        params = " SMTPUTF8" if needs_smtputf8(asked) else ""
        smtp.command_encoding = "utf-8" if params else "ascii"  # as in a transaction: reset below
        try:
            code, message = _mail(smtp, sender, params)
            mail_answered = True
            if code != 250:
                return Probe(session._refused(result, asked, code, message, reset=code != 421), [], [], False)
            group_max = REFUSALS_MAX if smtp.has_extn("pipelining") else 1
            in_transaction = 0
            index = 0
            while index < len(asked):
                refused = len(result.rejected) + len(result.deferred) - len(unsent)  # unsent cost no error
                if refused >= REFUSALS_MAX:
                    break
                if in_transaction >= RCPT_MAX:
                    # Only asking: start over, so no transaction holds more than RCPT_MAX.
                    session._reset(smtp)
                    if session._smtp is None:
                        raise smtplib.SMTPServerDisconnected("RSET failed")
                    code, message = _mail(smtp, sender, params)
                    if code != 250:
                        raise smtplib.SMTPServerDisconnected(_reply(code, message))
                    in_transaction = 0
                # At most as many in one write as may still be refused (RFC 2920 groups).
                group = asked[index:index + min(group_max, REFUSALS_MAX - refused, RCPT_MAX - in_transaction)]
                smtp.send("".join(f"RCPT TO:<{r}>\r\n" for r in group))
                for rcpt in group:
                    before = len(result.accepted)
                    SmtpSession._rcpt_reply(result, rcpt, *smtp.getreply())
                    if len(result.accepted) > before:
                        in_transaction += 1
                index += len(group)
            session._reset(smtp)
            taken, result.accepted = result.accepted, []
            return Probe(result, taken, asked[index:], False)
        except (OSError, smtplib.SMTPException, socket.timeout) as exc:
            session.drop()
            if reused and not mail_answered:
                result = DeliveryResult()
                continue  # a stale kept connection: once more on a fresh one
            text = (describe(exc, session.host, session.port) if isinstance(exc, OSError)
                    else f"SMTP session with {session.host}:{session.port} ended: {exc}")
            result.accepted = []
            result.deferred.update({r: text for r in recipients if r not in result.rejected})
            result.reply = text
            return Probe(result, [], [], True)
        finally:
            smtp.command_encoding = "ascii"
    raise AssertionError("unreachable")


def _mail(smtp: smtplib.SMTP, sender: str, params: str = "") -> Tuple[int, bytes]:
    """MAIL FROM, with the null sender when MailPlus refuses the sender (as in a transaction)."""
    code, message = smtp.docmd("MAIL", f"FROM:<{sender}>{params}")
    if code >= 500 and sender:
        smtp.rset()
        code, message = smtp.docmd("MAIL", f"FROM:<>{params}")
    return code, message


def deliver(host: str, port: int, sender: str, recipients: List[str], chunks: Callable[[], Iterable[bytes]],
            before_dot: Optional[Callable[[List[str]], None]] = None, timeout: float = 300.0,
            helo: str = "smartpop.localdomain", domains: Optional[Sequence[str]] = None) -> DeliveryResult:
    """Hand one message over a connection of its own (one transaction, then QUIT)."""
    session = SmtpSession(host, port, timeout, helo, domains)
    try:
        return session.deliver(sender, recipients, chunks, before_dot)
    finally:
        session.close()


def probe(host: str, port: int, timeout: float = 15.0) -> str:
    """Connect to the delivery target, EHLO and QUIT; return its first EHLO line (for `check`)."""
    try:
        with smtplib.SMTP(host, port, local_hostname="smartpop.localdomain", timeout=timeout) as smtp:
            code, message = smtp.ehlo()
            if code != 250:
                raise ConnectError(f"{host}:{port} answered EHLO with {_reply(code, message)}")
            return _reply(code, message).splitlines()[0]
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectError(describe(exc, host, port) if isinstance(exc, OSError) else str(exc)) from exc
