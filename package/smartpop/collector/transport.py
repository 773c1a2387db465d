"""Sockets and TLS for the provider connection: verified contexts and one-line errors."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

from smartpop.errors import ConnectError

# Building a context loads the system CA store (18.8 ms of CPU each, measured): with 200 accounts
# per pass that dominated a quiet poll. Contexts are shared (wrap_socket is thread-safe)
# and rebuilt when the ca_file changes on disk.
_contexts: Dict[Tuple[Optional[str], Optional[float]], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(ca_file: Optional[str]) -> ssl.SSLContext:
    """A verifying client context (chain + hostname); `ca_file` adds a private CA."""
    try:
        stamp: Optional[float] = os.stat(ca_file).st_mtime if ca_file else None
    except OSError:
        stamp = None  # let _new_context report the unreadable file
    key = (ca_file, stamp)
    with _contexts_lock:
        context = _contexts.get(key)
    if context is None:
        context = _new_context(ca_file)
        with _contexts_lock:
            if len(_contexts) > 64:
                _contexts.clear()
            _contexts[key] = context
    return context


class Tls(NamedTuple):
    """When a provider connection turns to TLS: right at connect, after STLS/STARTTLS, or never."""

    on_connect: Optional[ssl.SSLContext]
    upgrade: Optional[ssl.SSLContext]


def tls_for(security: str, ca_file: Optional[str]) -> Tls:
    """The verifying context for the account's security mode ("ssl", "starttls" or "none").

    "none" is the only way to go without TLS, and the schema admits it only with
    allow_insecure; every other mode verifies chain and hostname.
    """
    if security == "none":
        return Tls(None, None)
    context = tls_context(ca_file)
    if security == "ssl":
        return Tls(context, None)
    return Tls(None, context)


def _new_context(ca_file: Optional[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot read ca_file {ca_file}: {exc}") from exc
    # create_default_context already sets these; stated so a reader never has to wonder.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # 3.8's default still allows TLS 1.0
    return context


def describe(exc: BaseException, host: str, port: int) -> str:
    """One clear line for a network or TLS failure."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not trusted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {exc.reason or exc}"
    if isinstance(exc, socket.timeout):
        return f"timed out talking to {where}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {where} refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host}: {exc.strerror}"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return f"connection to {where} lost"
    if isinstance(exc, OSError):
        return f"network error with {where}: {exc.strerror or exc}"
    return f"error with {where}: {exc}"


@contextlib.contextmanager
def network_errors(host: str, port: int) -> Iterator[None]:
    """Turn socket/TLS exceptions inside the block into ConnectError with one clear line."""
    try:
        yield
    except (OSError, EOFError) as exc:
        raise ConnectError(describe(exc, host, port)) from exc


def nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: commands and the final dot are small writes that must not wait for an ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP or not supported: only slower


def open_socket(host: str, port: int, timeout: float, context: Optional[ssl.SSLContext]) -> socket.socket:
    """Connect (and wrap in TLS when `context` is given); errors become ConnectError."""
    with network_errors(host, port):
        sock = socket.create_connection((host, port), timeout=timeout)
        nodelay(sock)
        if context is None:
            return sock
        try:
            return wrap(sock, context, host)
        except BaseException:
            sock.close()
            raise


def wrap(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """The TLS handshake on a connected socket, checking the certificate against `host`."""
    return context.wrap_socket(sock, server_hostname=host)
