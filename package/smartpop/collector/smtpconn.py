"""One SMTP connection to MailPlus and the transactions on it: envelope, streamed DATA, the dot.

smtplib's sendmail() wants the whole message in memory, so the envelope goes out through
smtplib's connection and the DATA body is streamed here (CRLF line ends, dot-stuffing).
The envelope is one pipeline (RFC 2920): all of it in one write where MailPlus offers
PIPELINING, one command per write (lock-step) where it does not. Hooks passed with the body
run right before the terminating dot (where the runner makes its note durable) and once
the dot is written. What each reply means is decided in smtpreply.py; which recipients may
be sent at all, and how a long list is split, in delivery.py.
"""

from __future__ import annotations

import logging
import select
import smtplib
import socket
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

from smartpop.collector.mailboxcheck import NO_SMTPUTF8
from smartpop.collector.smtpreply import DeliveryResult, Outcome, Reply, classify_reply, lock_step_goes_on
from smartpop.collector.transport import describe, nodelay

log = logging.getLogger(__name__)

R = TypeVar("R")

SEND_BUFFER = 64 * 1024

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


def not_sent(why: str) -> str:
    """The reply recorded for a recipient SmartPop refused to send, and why (a 5xx: its copy goes to the fallback)."""
    return f"550 5.1.3 not sent by SmartPop: {why}"


def utf8_split(smtp: smtplib.SMTP, recipients: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """(recipients to send, refused ones): non-ASCII ones are refused on a connection without SMTPUTF8.

    `deliver` screened against an earlier EHLO; a reconnect may reach a MailPlus that no longer offers it.
    """
    if not needs_smtputf8(recipients) or smtp.has_extn("smtputf8"):
        return recipients, {}
    refused = {r: not_sent(NO_SMTPUTF8) for r in recipients if not r.isascii()}
    for rcpt in refused:
        log.warning("RCPT TO %r not sent: %s", rcpt, NO_SMTPUTF8)
    return [r for r in recipients if r.isascii()], refused


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


def pipeline(smtp: smtplib.SMTP, lines: Sequence[str], depth: int, replies: List[Reply],
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
        if any("\r" in line or "\n" in line for line in group):
            # As smtplib's putcmd: a line break inside a command would smuggle in another one.
            raise ValueError(f"an SMTP command with a line break: {group!r}")
        smtp.send("".join(f"{line}\r\n" for line in group))
        sent += len(group)
        for _ in group:
            reply = classify_reply(*smtp.getreply())
            heard.append(reply)
            replies.append(reply)
            if reply.outcome is Outcome.CLOSING:
                break
    return heard


def failure_text(exc: BaseException, host: str, port: int, during: bool) -> str:
    """One line for an SMTP exchange that failed with `exc` (`during`: the session was open)."""
    if isinstance(exc, OSError):
        return describe(exc, host, port)
    return f"SMTP session with {host}:{port} ended: {exc}" if during else str(exc)


class SmtpConnection:
    """One SMTP connection to MailPlus, reused for the transactions of a run.

    A new connection per message cost a TCP handshake, a greeting and an EHLO each time
    (2,001 connects for 2,000 messages in the 2026-11-28 profile). The connection is
    opened on first use and re-opened transparently when the server closed it in between
    (idle timeout, 421); a failure inside one transaction only affects that message.
    """

    def __init__(self, host: str, port: int, timeout: float = 300.0, helo: str = "smartpop.localdomain") -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self.helo = helo
        self.connects = 0
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

    def on_connection(self, recipients: List[str], run: Callable[[smtplib.SMTP, bool], Optional[R]],
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
            text = failure_text(exc, self.host, self.port, during=False)
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

    @property
    def is_open(self) -> bool:
        """Whether a connection is kept (a refusal or failure may have dropped it)."""
        return self._smtp is not None

    def transaction(self, sender: str, recipients: List[str], body: Body) -> DeliveryResult:
        """One transaction for screened recipients, on the kept connection or a fresh one."""
        return self.on_connection(
            recipients, lambda smtp, reused: self._transaction(smtp, sender, recipients, body, reused),
            lambda unreachable: unreachable)

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipients: List[str], body: Body,
                     reused: bool) -> Optional[DeliveryResult]:
        """One MAIL..DATA transaction, with SMTPUTF8 if a recipient needs it; None as in `_exchange`."""
        send, refused = utf8_split(smtp, recipients)
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
            result.lose(recipients, failure_text(exc, self.host, self.port, during=True))
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
            replies = pipeline(smtp, lines, depth, heard, lambda done: lock_step_goes_on(done, len(recipients)))
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
                self.reset(smtp)
                if self._smtp is None:
                    raise smtplib.SMTPServerDisconnected("RSET failed")
                continue
            if mail.outcome is not Outcome.DONE:
                result.refuse(recipients, mail)
                self.end_after(smtp, mail)
                return False
            for rcpt, reply in zip(recipients, replies[1:]):
                result.note_rcpt(rcpt, reply)
                if reply.outcome is Outcome.CLOSING:
                    raise smtplib.SMTPServerDisconnected(reply.text)
            if not result.accepted:
                self.reset(smtp)
                return False
            assert len(replies) == len(lines)  # a RCPT was taken, so DATA went out and was answered
            data = replies[-1]
            if data.outcome is not Outcome.GO_ON:
                result.refuse_accepted(data)
                self.end_after(smtp, data)
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

    def end_after(self, smtp: smtplib.SMTP, refusal: Reply) -> None:
        """After a refusal: RSET, or drop a connection the server is closing (421)."""
        if refusal.outcome is Outcome.CLOSING:
            self.drop()
        else:
            self.reset(smtp)

    def reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a transaction that ended before its dot; a connection that fails it is dropped."""
        try:
            code, _ = smtp.rset()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code != 250:
            self.drop()

