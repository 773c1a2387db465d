"""SMTP hand-off to MailPlus: one transaction per message, per-recipient results, streamed DATA.

smtplib's sendmail() wants the whole message in memory, so MAIL/RCPT go through smtplib
and the DATA body is streamed here (CRLF line ends, dot-stuffing). A hook runs right
before the terminating dot: that is where the runner makes its journal entry durable.
"""

from __future__ import annotations

import logging
import select
import smtplib
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

from smartpop.collector.transport import describe
from smartpop.errors import ConnectError

log = logging.getLogger(__name__)

SEND_BUFFER = 64 * 1024


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


def deliver(host: str, port: int, sender: str, recipients: List[str], chunks: Callable[[], Iterable[bytes]],
            before_dot: Optional[Callable[[List[str]], None]] = None, timeout: float = 300.0,
            helo: str = "smartpop.localdomain") -> DeliveryResult:
    """Hand one message to the SMTP server for all `recipients` (one transaction)."""
    result = DeliveryResult()
    dot_sent = False
    try:
        smtp = smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:
        text = describe(exc, host, port) if isinstance(exc, OSError) else str(exc)
        result.deferred = {r: text for r in recipients}
        result.reply = text
        result.unreachable = True
        return result
    try:
        smtp.ehlo_or_helo_if_needed()
        code, message = smtp.mail(sender)
        if code >= 500 and sender:
            # A sender MailPlus dislikes (e.g. a local address, "not logged in") must not
            # block the message: the null sender can always be accepted and never bounces.
            log.warning("MAIL FROM:<%s> refused (%s); using <>", sender, _reply(code, message))
            smtp.rset()
            code, message = smtp.mail("")
        if code != 250:
            text = _reply(code, message)
            target = result.rejected if code >= 500 else result.deferred
            target.update({r: text for r in recipients})
            result.reply = text
            return result
        for rcpt in recipients:
            code, message = smtp.rcpt(rcpt)
            if code in (250, 251):
                result.accepted.append(rcpt)
            elif code >= 500:
                result.rejected[rcpt] = _reply(code, message)
            else:
                result.deferred[rcpt] = _reply(code, message)
            if code == 421:
                raise smtplib.SMTPServerDisconnected(_reply(code, message))
        if not result.accepted:
            smtp.rset()
            return result
        code, message = smtp.docmd("DATA")
        if code != 354:
            text = _reply(code, message)
            target = result.rejected if code >= 500 else result.deferred
            target.update({r: text for r in result.accepted})
            result.accepted, result.reply = [], text
            return result
        buffer = bytearray()
        sock = smtp.sock
        assert sock is not None
        for piece in _crlf(chunks()):
            buffer += piece
            if len(buffer) >= SEND_BUFFER:
                sock.sendall(bytes(buffer))
                buffer.clear()
        if buffer:
            sock.sendall(bytes(buffer))
        # Postfix says nothing during DATA unless it gives up: anything readable now (an
        # error reply or EOF) means the dot must not be sent.
        if select.select([sock], [], [], 0)[0]:
            code, message = smtp.getreply()
            text = _reply(code, message)
            target = result.rejected if 500 <= code < 600 else result.deferred
            target.update({r: text for r in result.accepted})
            result.accepted, result.reply = [], text
            return result
        if before_dot is not None:
            before_dot(list(result.accepted))
        dot_sent = True
        sock.sendall(b".\r\n")
        code, message = smtp.getreply()
        result.reply = _reply(code, message)
        if code != 250:
            target = result.rejected if code >= 500 else result.deferred
            target.update({r: result.reply for r in result.accepted})
            result.accepted = []
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        return result
    except (OSError, smtplib.SMTPException, socket.timeout) as exc:
        text = (describe(exc, host, port) if isinstance(exc, OSError)
                else f"SMTP session with {host}:{port} ended: {exc}")
        result.doubt = dot_sent
        result.deferred.update({r: text for r in result.accepted})
        result.accepted = []
        for rcpt in recipients:
            if rcpt not in result.accepted and rcpt not in result.rejected:
                result.deferred.setdefault(rcpt, text)
        result.reply = text
        return result
    finally:
        smtp.close()


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
