"""Network probes for the health checks: a relay login as Postfix does it, and a TLS certificate probe.

Each probe returns a plain result object and never raises for a network or protocol failure:
the failure is part of the result, which the pure checks in checks.py judge.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from smartpop.collector.transport import describe, wrap
from smartpop.config.secret import Secret
from smartpop.log import redact

log = logging.getLogger(__name__)

TIMEOUT = 20.0


def relay_tls_context(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts only `ca_file` and matches the host name, as Postfix's level 'secure'."""
    # create_default_context(cafile=...) loads that bundle only, not the system store: Postfix's
    # smtp_tls_CAfile is the one trust anchor it uses for the relay (docs/RELAY.md, "TLS").
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _peer_not_after(sock: Any) -> Optional[float]:
    cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    not_after = cert.get("notAfter") if cert else None
    return float(ssl.cert_time_to_seconds(not_after)) if isinstance(not_after, str) else None


@dataclass
class LoginResult:
    """What happened when SmartPop logged in to a relay the way Postfix would."""

    host: str
    port: int
    security: str
    username: str
    # The step reached: connect, tls, ehlo, starttls, auth, done.
    stage: str = "connect"
    logged_in: bool = False
    auth_sent: bool = False
    reply_code: Optional[int] = None
    reply: str = ""
    error: str = ""
    tls_version: Optional[str] = None
    cert_not_after: Optional[float] = None
    verify_failed: bool = False
    # Only for a probe that sends a message (the round trip): the DATA reply, when accepted.
    sent: bool = False

    def as_details(self) -> Dict[str, Any]:
        """JSON-ready details for a finding (no password: the result never holds one)."""
        return {"host": self.host, "port": self.port, "security": self.security, "username": self.username,
                "stage": self.stage, "reply_code": self.reply_code, "reply": self.reply, "error": self.error,
                "tls_version": self.tls_version}


def _reply_text(raw: Any) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return redact(" ".join(text.split()))[:300]


@dataclass(frozen=True)
class Envelope:
    """One message to submit after the login (the round trip): MAIL FROM, RCPT TO, the bytes."""

    sender: str
    recipient: str
    data: bytes


def probe_relay_login(host: str, port: int, security: str, username: str, password: Secret, ca_file: str,
                      timeout: float = TIMEOUT, local_hostname: Optional[str] = None,
                      envelope: Optional[Envelope] = None) -> LoginResult:
    """Connect (implicit TLS or mandatory STARTTLS), verify the certificate, EHLO, AUTH, QUIT.

    No mail is sent unless `envelope` is given: then that one message, after the login.
    """
    result = LoginResult(host, port, security, username)
    # gethostname, not getfqdn (smtplib's default): a reverse look-up can hang on a NAS with broken DNS.
    helo = local_hostname or socket.gethostname() or "localhost"
    client: Optional[smtplib.SMTP] = None
    try:
        context = relay_tls_context(ca_file)
        if security == "ssl":
            result.stage = "tls"
            client = smtplib.SMTP_SSL(host, port, local_hostname=helo, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout)
            result.stage = "ehlo"
            client.ehlo()
            result.stage = "starttls"
            if not client.has_extn("starttls"):
                # Postfix (level secure) would defer the mail; the password must not travel in clear.
                result.error = "the server does not offer STARTTLS (stripped on the way, or not supported)"
                return result
            client.starttls(context=context)
        result.tls_version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else None
        result.cert_not_after = _peer_not_after(client.sock)
        result.stage = "ehlo"
        code, reply = client.ehlo()
        result.reply_code, result.reply = code, _reply_text(reply)
        result.stage = "auth"
        if not client.has_extn("auth"):
            result.error = "the server offers no AUTH after TLS"
            return result
        result.auth_sent = True
        code, reply = client.login(username, password.reveal())
        result.reply_code, result.reply = code, _reply_text(reply)
        result.logged_in = True
        if envelope is not None:
            result.stage = "send"
            _submit(client, envelope, result)
        result.stage = "done"
    except smtplib.SMTPAuthenticationError as exc:
        result.reply_code, result.reply = exc.smtp_code, _reply_text(exc.smtp_error)
        result.error = "the server refused the login"
    except smtplib.SMTPResponseException as exc:
        result.reply_code, result.reply = exc.smtp_code, _reply_text(exc.smtp_error)
        result.error = f"the server answered {exc.smtp_code} during {result.stage}"
    except smtplib.SMTPException as exc:
        result.error = _reply_text(str(exc))
    except ssl.SSLCertVerificationError as exc:
        result.verify_failed = True
        result.error = describe(exc, host, port)
    except (OSError, EOFError) as exc:
        result.error = describe(exc, host, port)
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    log.info("relay login probe %s:%d (%s): stage %s, %s", host, port, security, result.stage,
             "logged in" if result.logged_in else result.error or "not logged in")
    return result


def _submit(client: smtplib.SMTP, envelope: Envelope, result: LoginResult) -> None:
    """MAIL, RCPT, DATA step by step, so the DATA reply (the provider's queue id) is kept."""
    code, reply = client.mail(envelope.sender)
    if code != 250:
        raise smtplib.SMTPResponseException(code, reply)
    code, reply = client.rcpt(envelope.recipient)
    if code not in (250, 251):
        raise smtplib.SMTPResponseException(code, reply)
    code, reply = client.data(envelope.data)
    result.reply_code, result.reply = code, _reply_text(reply)
    if code != 250:
        raise smtplib.SMTPResponseException(code, reply)
    result.sent = True


@dataclass
class CertResult:
    """The certificate a server presented, or why verification failed."""

    host: str
    port: int
    protocol: str
    security: str
    verified: bool = False
    not_after: Optional[float] = None
    error: str = ""
    verify_failed: bool = False
    subject: List[str] = field(default_factory=list)

    def as_details(self) -> Dict[str, Any]:
        """JSON-ready details for a finding."""
        return {"host": self.host, "port": self.port, "protocol": self.protocol, "security": self.security,
                "not_after": self.not_after, "error": self.error, "names": self.subject}


class _Declined(Exception):
    """The server did not agree to STARTTLS."""


def _read_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n") and len(data) < 4096:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return bytes(data)


def _starttls(sock: socket.socket, protocol: str) -> None:
    """Ask for TLS in the protocol's own way; raise _Declined when the server does not agree.

    Not the collector's STLS/STARTTLS: that one is part of a login session (Pop3Source and
    ImapSource connect, upgrade and log in in one step, and need the account's credential),
    and the collector has no SMTP STARTTLS at all (MailPlus is reached in clear on loopback;
    the relay login above uses smtplib's, with Postfix's trust). The certificate probe only
    needs the upgrade, on any of the three protocols and without a login. The handshake
    itself, with the same verifying context as collection, is transport.wrap's.
    """
    if protocol == "smtp":
        line = _read_line(sock)
        while line[3:4] == b"-":
            line = _read_line(sock)
        sock.sendall(b"EHLO smartpop-health\r\n")
        offered = False
        while True:
            line = _read_line(sock)
            offered = offered or line[4:].strip().upper() == b"STARTTLS"
            if line[3:4] != b"-":
                break
        if not offered:
            raise _Declined("the server does not offer STARTTLS")
        sock.sendall(b"STARTTLS\r\n")
        ok = _read_line(sock).startswith(b"220")
    elif protocol == "pop3":
        _read_line(sock)
        sock.sendall(b"STLS\r\n")
        ok = _read_line(sock).startswith(b"+OK")
    else:
        _read_line(sock)
        sock.sendall(b"h1 STARTTLS\r\n")
        line = _read_line(sock)
        while line.startswith(b"*"):
            line = _read_line(sock)
        ok = line.startswith(b"h1 OK")
    if not ok:
        raise _Declined("the server refused STARTTLS")


def probe_certificate(host: str, port: int, protocol: str, security: str, context: ssl.SSLContext,
                      timeout: float = TIMEOUT) -> CertResult:
    """Connect with TLS (implicit, or STARTTLS for pop3/imap/smtp), verify with `context`, read the expiry."""
    result = CertResult(host, port, protocol, security)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if security == "starttls":
                _starttls(raw, protocol)
            with wrap(raw, context, host) as tls:
                cert = tls.getpeercert() or {}
        result.verified = True
        not_after = cert.get("notAfter")
        result.not_after = float(ssl.cert_time_to_seconds(not_after)) if isinstance(not_after, str) else None
        names: Any = cert.get("subjectAltName", ())
        result.subject = [str(pair[1]) for pair in names if pair[0] in ("DNS", "IP Address")]
    except ssl.SSLCertVerificationError as exc:
        result.verify_failed = True
        result.error = describe(exc, host, port)
    except _Declined as exc:
        result.error = f"{host}:{port}: {exc}"
    except (OSError, EOFError) as exc:
        result.error = describe(exc, host, port)
    log.info("certificate probe %s:%d (%s/%s): %s", host, port, protocol, security,
             "verified" if result.verified else result.error)
    return result
