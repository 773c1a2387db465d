"""SMTP hand-off to MailPlus: one transaction per message on a reused connection, streamed DATA.

smtplib's sendmail() wants the whole message in memory, so the envelope goes out through
smtplib's connection and the DATA body is streamed here (CRLF line ends, dot-stuffing). A
hook runs right before the terminating dot: that is where the runner makes its journal
entry durable; another runs once the dot is written. The envelope is one pipeline (RFC 2920):
all of it in one write where MailPlus offers PIPELINING, one command per write (lock-step)
where it does not. What each reply means is decided in smtpreply.py.
A transaction with a non-ASCII recipient uses SMTPUTF8 (RFC 6531) where MailPlus offers it;
all other transactions send exactly what they sent before.
"""

from __future__ import annotations

import logging
import select
import smtplib
import socket
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

from smartpop.collector.recipients import NO_SMTPUTF8, safe_reason
from smartpop.collector.smtpreply import DeliveryResult, Outcome, Reply, classify_reply, lock_step_goes_on
from smartpop.collector.transport import describe, nodelay
from smartpop.errors import ConnectError

__all__ = ["RCPT_MAX", "REFUSALS_MAX", "Body", "DeliveryResult", "Probe", "SmtpSession", "deliver_many",
           "needs_smtputf8", "probe", "probe_recipients", "screen"]

log = logging.getLogger(__name__)

R = TypeVar("R")

SEND_BUFFER = 64 * 1024
# Recipients per transaction, well below Postfix's smtpd_recipient_limit (1000; beyond it every
# RCPT gets 452, and past the overshoot limit each one counts as an error).
RCPT_MAX = 100
# Refused RCPTs one message may cost. Postfix counts each as an error of the session: from
# smtpd_soft_error_limit (10) on it waits a second before every reply, at smtpd_hard_error_limit
# (20) it hangs up, and only a delivered message resets the count. The recipients of a larger
# list that are not asked once this many were refused get their copy via the fallback.
REFUSALS_MAX = 5

# An exception that ends an SMTP exchange: the connection is then in an unknown state.
SESSION_ERRORS = (OSError, smtplib.SMTPException, socket.timeout)


class Body(NamedTuple):
    """The message after DATA's 354, and the hooks around its terminating dot."""

    chunks: Callable[[], Iterable[bytes]]
    # Runs right before the dot with the recipients taken at RCPT (the runner's durable note).
    before_dot: Optional[Callable[[List[str]], None]] = None
    # Runs once the dot's write is done or failed, if before_dot returned.
    after_dot: Optional[Callable[[], None]] = None


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



def _pipeline(smtp: smtplib.SMTP, lines: Sequence[str], depth: int, replies: List[Reply],
              goes_on: Callable[[Sequence[Reply]], bool] = lambda replies: True) -> List[Reply]:
    """Send `lines`, `depth` per write, and read their replies in order: appended to `replies`, returned.

    RFC 2920: a client may send a group of commands and then read their replies. Depth 1 is
    plain lock-step SMTP, where `goes_on(replies so far)` may stop before the next command.
    After a 421 nothing more is sent or read: the server is closing the connection.
    """
    heard: List[Reply] = []
    sent = 0
    while sent < len(lines):
        if heard and (heard[-1].outcome is Outcome.CLOSING or not goes_on(heard)):
            break
        group = lines[sent:sent + depth]
        text = "".join(f"{line}\r\n" for line in group)
        if text.count("\n") != len(group):
            # As smtplib's putcmd: a line break inside a command would smuggle in another one.
            raise ValueError(f"an SMTP command with a line break: {text!r}")
        smtp.send(text)
        sent += len(group)
        for _ in group:
            reply = classify_reply(*smtp.getreply())
            heard.append(reply)
            replies.append(reply)
            if reply.outcome is Outcome.CLOSING:
                break
    return heard


def _failure(exc: BaseException, host: str, port: int, during: bool) -> str:
    """One line for an SMTP exchange that failed with `exc` (`during`: the session was open)."""
    if isinstance(exc, OSError):
        return describe(exc, host, port)
    return f"SMTP session with {host}:{port} ended: {exc}" if during else str(exc)


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

    def _on_connection(self, recipients: List[str], run: Callable[[smtplib.SMTP, bool], Optional[R]],
                       unreachable: Callable[[DeliveryResult], R]) -> R:
        """`run(connection, reused)` on the kept connection, or on a fresh one if there is none.

        `run` returns None when the kept connection turned out dead before the server answered
        MAIL: nothing of the message was handed over, so once more on a fresh one is safe.
        """
        smtp = self._idle_connection()
        if smtp is not None:
            done = run(smtp, True)
            if done is not None:
                return done
            self.drop()
        try:
            smtp = self._open()
        except (OSError, smtplib.SMTPException) as exc:
            text = _failure(exc, self.host, self.port, during=False)
            self._smtp = None
            return unreachable(DeliveryResult(deferred={r: text for r in recipients}, reply=text, unreachable=True))
        done = run(smtp, False)
        assert done is not None
        return done

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
        body = Body(chunks, before_dot, after_dot)
        if len(recipients) <= REFUSALS_MAX:
            result = self.transaction(sender, recipients, body)
            self.errors = 0 if result.accepted else self.errors + len(result.rejected) + len(result.deferred)
        else:
            result = deliver_many(self, sender, recipients, chunks, before_dot, after_dot)
        result.rejected.update(refused)
        return result

    def transaction(self, sender: str, recipients: List[str], body: Body) -> DeliveryResult:
        """One transaction for screened recipients, on the kept connection or a fresh one."""
        return self._on_connection(
            recipients, lambda smtp, reused: self._transaction(smtp, sender, recipients, body, reused),
            lambda unreachable: unreachable)

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipients: List[str], body: Body,
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
            result = self._exchange(smtp, sender, send, body, reused, " SMTPUTF8" if utf8 else "")
        finally:
            smtp.command_encoding = "ascii"
        if result is not None:
            result.rejected.update(refused)
            result.reply = result.reply or next(iter(refused.values()), "")
        return result

    def _exchange(self, smtp: smtplib.SMTP, sender: str, recipients: List[str], body: Body,
                  reused: bool, params: str) -> Optional[DeliveryResult]:
        """One MAIL..DATA transaction (`params` after MAIL FROM); None if a reused connection was found dead at MAIL."""
        result = DeliveryResult()
        heard: List[Reply] = []  # every reply of this transaction: none means the connection was dead
        dot_sent = False
        try:
            if not self._envelope(smtp, sender, recipients, params, result, heard):
                return result
            if not self._stream(smtp, body, result):
                return result
            sock = smtp.sock
            assert sock is not None
            try:
                dot_sent = True
                # A write of its own, after the check in _stream; TCP_NODELAY (set when the
                # connection was opened) sends this small segment at once instead of
                # holding it until the body's last segment is acknowledged.
                sock.sendall(b".\r\n")
            finally:
                if body.after_dot is not None:
                    body.after_dot()
            self._dot_reply(smtp, result)
            return result
        except SESSION_ERRORS as exc:
            self.drop()
            if reused and not heard:
                return None
            result.doubt = dot_sent
            result.lose(recipients, _failure(exc, self.host, self.port, during=True))
            return result
        except BaseException:
            # Anything else (the durable note before the dot failed on a full disk, a stop):
            # close at once. A QUIT later would sit inside the open DATA until the network
            # timeout, and without the dot Postfix discards what it got.
            self.drop()
            raise

    def _envelope(self, smtp: smtplib.SMTP, sender: str, recipients: List[str], params: str,
                  result: DeliveryResult, heard: List[Reply]) -> bool:
        """MAIL, every RCPT and DATA as one pipeline; True once DATA got its 354, else `result` says why not.

        With PIPELINING all of it goes in one write, which saves two round trips per message;
        the replies come back in order, and a refused MAIL makes the server refuse the rest too.
        Without it the pipeline has depth 1: MAIL, wait, RCPT, wait, ..., DATA.
        """
        depth = len(recipients) + 2 if smtp.has_extn("pipelining") else 1
        for attempt in (sender, ""):
            # Addresses go out as they are: email.utils' parser (smtplib's mail()/rcpt()) cost
            # 0.1 ms each in the profile, and ours are normalised bare addresses already.
            lines = [f"MAIL FROM:<{attempt}>{params}"] + [f"RCPT TO:<{r}>" for r in recipients] + ["DATA"]
            replies = _pipeline(smtp, lines, depth, heard, lambda done: lock_step_goes_on(done, len(recipients)))
            mail = replies[0]
            if len(replies) == len(lines) and replies[-1].outcome is Outcome.GO_ON and not (
                    mail.outcome is Outcome.DONE and any(r.outcome is Outcome.DONE for r in replies[1:-1])):
                # Only a server ignoring RFC 2920 says 354 after refusing every recipient:
                # end that empty transaction at once; it has nobody to deliver to.
                smtp.send(".\r\n")
                smtp.getreply()
            if mail.outcome is Outcome.PERMANENT and attempt:
                # A sender MailPlus dislikes (e.g. a local address, "not logged in") must not
                # block the message: the null sender can always be accepted and never bounces.
                log.warning("MAIL FROM:<%s> refused (%s); using <>", attempt, mail.text)
                self._reset(smtp)
                if self._smtp is None:
                    raise smtplib.SMTPServerDisconnected("RSET failed")
                continue
            if mail.outcome is not Outcome.DONE:
                result.refuse(recipients, mail)
                self._end(smtp, mail)
                return False
            for rcpt, reply in zip(recipients, replies[1:]):
                result.note_rcpt(rcpt, reply)
                if reply.outcome is Outcome.CLOSING:
                    raise smtplib.SMTPServerDisconnected(reply.text)
            if not result.accepted:
                self._reset(smtp)
                return False
            data = replies[-1]
            if data.outcome is not Outcome.GO_ON:
                result.refuse_accepted(data)
                self._end(smtp, data)
                return False
            return True
        raise AssertionError("the null sender is the last attempt")

    def _stream(self, smtp: smtplib.SMTP, body: Body, result: DeliveryResult) -> bool:
        """Stream the body after the 354 and run `before_dot`; False if the server gave up first."""
        sock = smtp.sock
        assert sock is not None
        buffer = bytearray()
        for piece in _crlf(body.chunks()):
            buffer += piece
            if len(buffer) >= SEND_BUFFER:
                sock.sendall(buffer)
                buffer.clear()
        if buffer:
            sock.sendall(buffer)
        # Postfix says nothing during DATA unless it gives up: anything readable now (an
        # error reply or EOF) means the dot must not be sent.
        if select.select([sock], [], [], 0)[0]:
            result.refuse_accepted(classify_reply(*smtp.getreply()))
            self.drop()  # the server left DATA on its own: its state is unknown
            return False
        if body.before_dot is not None:
            body.before_dot(list(result.accepted))
        return True

    def _dot_reply(self, smtp: smtplib.SMTP, result: DeliveryResult) -> None:
        """File the reply to the dot: taken, refused, or in doubt when no readable reply came."""
        reply = classify_reply(*smtp.getreply())
        result.reply = reply.text
        if reply.outcome is Outcome.UNREADABLE:
            # No readable reply to the dot (smtplib gives -1): MailPlus may or may not have it.
            result.doubt = True
            result.refuse_accepted(reply)
            self.drop()
        elif reply.outcome is not Outcome.DONE:
            result.refuse_accepted(reply)
            if reply.outcome is Outcome.CLOSING:
                self.drop()
        # After the reply to the dot the server is back in its initial state
        # (RFC 5321 4.1.1.4), so the next MAIL needs no RSET.

    def _end(self, smtp: smtplib.SMTP, refusal: Reply) -> None:
        """After a refusal: RSET, or drop a connection the server is closing (421)."""
        if refusal.outcome is Outcome.CLOSING:
            self.drop()
        else:
            self._reset(smtp)

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
    body = Body(chunks, before_dot, after_dot)
    for start in range(0, len(taken), RCPT_MAX):
        batch = taken[start:start + RCPT_MAX]
        part = session.transaction(sender, batch, body)
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
    return session._on_connection(
        recipients, lambda smtp, reused: _ask(session, smtp, reused, sender, recipients),
        lambda unreachable: Probe(unreachable, [], [], True))


def _ask(session: SmtpSession, smtp: smtplib.SMTP, reused: bool, sender: str, recipients: List[str]
         ) -> Optional[Probe]:
    """probe_recipients() on one connection; None if a reused one was found dead before MAIL was answered."""
    result = DeliveryResult()
    heard: List[Reply] = []
    asked, unsent = _utf8_split(smtp, recipients)
    result.rejected.update(unsent)
    params = " SMTPUTF8" if needs_smtputf8(asked) else ""
    smtp.command_encoding = "utf-8" if params else "ascii"  # as in a transaction: reset below
    try:
        mail = _mail(session, smtp, sender, params, heard)
        if mail.outcome is not Outcome.DONE:
            result.refuse(asked, mail)
            session._end(smtp, mail)
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
                session._reset(smtp)
                if session._smtp is None:
                    raise smtplib.SMTPServerDisconnected("RSET failed")
                mail = _mail(session, smtp, sender, params, heard)
                if mail.outcome is not Outcome.DONE:
                    raise smtplib.SMTPServerDisconnected(mail.text)
                in_transaction = 0
            # At most as many in one write as may still be refused (RFC 2920 groups).
            group = asked[index:index + min(group_max, REFUSALS_MAX - refused, RCPT_MAX - in_transaction)]
            for rcpt, reply in zip(group, _pipeline(smtp, [f"RCPT TO:<{r}>" for r in group], len(group), heard)):
                result.note_rcpt(rcpt, reply)
                in_transaction += reply.outcome is Outcome.DONE
                if reply.outcome is Outcome.CLOSING:
                    raise smtplib.SMTPServerDisconnected(reply.text)
            index += len(group)
        session._reset(smtp)
        taken, result.accepted = result.accepted, []
        return Probe(result, taken, asked[index:], False)
    except SESSION_ERRORS as exc:
        session.drop()
        if reused and not heard:
            return None  # a stale kept connection: once more on a fresh one
        result.lose(recipients, _failure(exc, session.host, session.port, during=True))
        return Probe(result, [], [], True)
    finally:
        smtp.command_encoding = "ascii"


def _mail(session: SmtpSession, smtp: smtplib.SMTP, sender: str, params: str, heard: List[Reply]) -> Reply:
    """MAIL FROM, with the null sender when MailPlus refuses the sender (as in a transaction)."""
    mail = _pipeline(smtp, [f"MAIL FROM:<{sender}>{params}"], 1, heard)[0]
    if mail.outcome is Outcome.PERMANENT and sender:
        log.warning("MAIL FROM:<%s> refused (%s); using <>", sender, mail.text)
        session._reset(smtp)
        if session._smtp is None:
            raise smtplib.SMTPServerDisconnected("RSET failed")
        mail = _pipeline(smtp, [f"MAIL FROM:<>{params}"], 1, heard)[0]
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
        raise ConnectError(_failure(exc, host, port, during=False)) from exc
