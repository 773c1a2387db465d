"""A fake provider submission server (aiosmtpd) on 127.0.0.1 for the relay's end-to-end tests.

Mode "starttls": plain connect, STARTTLS required before AUTH and MAIL (port 587 style).
Mode "ssl": TLS from the first byte (port 465 style, Postfix's smtp_tls_wrappermode).
AUTH PLAIN/LOGIN is required; it is only accepted inside TLS. Every stored message records
who authenticated, with which mechanism, and the TLS version the session ran over.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from support.certs import TestCerts
from support.ports import free_ports


@dataclass
class Received:
    """One message as the provider got it."""

    user: str
    mechanism: str
    tls_version: Optional[str]
    mail_from: str
    rcpt_tos: List[str]
    data: bytes


def _tls_version(server: SMTP) -> Optional[str]:
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.version() if ssl_object is not None else None


class _Handler:
    def __init__(self, owner: Upstream) -> None:
        self.owner = owner

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        auth = session.auth_data
        user = auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else "-"
        raw = envelope.original_content if envelope.original_content is not None else envelope.content
        assert isinstance(raw, bytes)
        record = Received(user=user, mechanism=str(getattr(session, "smartpop_mech", "-")),
                          tls_version=_tls_version(server), mail_from=str(envelope.mail_from),
                          rcpt_tos=list(envelope.rcpt_tos), data=raw)
        with self.owner.lock:
            self.owner.messages.append(record)
        if self.owner.on_message is not None:
            self.owner.on_message(record)  # e.g. deliver into the provider's mailbox (the round trip)
        return "250 2.0.0 OK stored"


class Upstream:
    """One running provider; see the module docstring."""

    def __init__(self, certs: TestCerts, mode: str, users: Dict[str, str],
                 on_message: Optional[Callable[[Received], None]] = None) -> None:
        self.mode = mode
        self.on_message = on_message
        self.users = dict(users)
        self.messages: List[Received] = []
        self.auth_failures: List[str] = []
        self.lock = threading.Lock()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
        self.port = 0
        self._controller: Optional[Controller] = None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        # Credentials are only good inside TLS (aiosmtpd checks STARTTLS itself, not implicit TLS).
        ok = (_tls_version(server) is not None and isinstance(auth_data, LoginPassword)
              and self.users.get(auth_data.login.decode("utf-8", "replace")) == auth_data.password.decode("utf-8",
                                                                                                          "replace"))
        if ok:
            session.smartpop_mech = mechanism  # type: ignore[attr-defined]
        else:
            with self.lock:
                self.auth_failures.append(mechanism)
        # handled=False: aiosmtpd answers 235/535; auth_data must be returned to be kept.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> Upstream:
        """Listen on a free loopback port (retrying if another test took it meanwhile)."""
        for attempt in range(5):
            port = free_ports(1)[0]
            kwargs: Dict[str, Any] = dict(hostname="127.0.0.1", port=port, ready_timeout=10,
                                          authenticator=self._authenticate, auth_required=True,
                                          data_size_limit=50 * 1024 * 1024)
            if self.mode == "ssl":
                # Implicit TLS: aiosmtpd's auth_require_tls only knows STARTTLS; _authenticate checks TLS.
                kwargs.update(ssl_context=self.context, auth_require_tls=False)
            else:
                kwargs.update(tls_context=self.context, require_starttls=True, auth_require_tls=True)
            controller = Controller(_Handler(self), **kwargs)
            try:
                controller.start()
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.1)
                continue
            self._controller, self.port = controller, port
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_messages(self, count: int, timeout: float = 30.0) -> List[Received]:
        """Block until at least `count` messages arrived (queue drain, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)
