"""IMAP source on imaplib: UID + UIDVALIDITY, partial fetches so memory stays flat.

imaplib reads a literal into memory whole, so a message is fetched in slices with
`BODY.PEEK[]<offset.length>` (PEEK: \\Seen stays as the user left it). Python 3.8's
IMAP4 has no timeout argument, so the socket is created here with one.
"""

from __future__ import annotations

import imaplib
import logging
import re
import select
import socket
import ssl
from typing import Any, Dict, List, Optional, Sequence, Tuple

from smartpop.collector.credential import Credential, password_credential
from smartpop.collector.source import RefusedDelete, RemoteMessage, Sink
from smartpop.collector.transport import network_errors, open_socket, tls_for
from smartpop.config.schema import Account
from smartpop.errors import AuthError, ConnectError, ProtocolError
from smartpop.oauth import sasl

log = logging.getLogger(__name__)

SLICE = 1024 * 1024
_FETCH_ITEM = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")
# Batched UID FETCH: small messages (by their listed size) are asked for together, each
# capped to its first BATCH_SLICE bytes so a server that lies about sizes cannot make a
# batch big; the rest of a larger message follows in SLICEs as usual. Only small ones:
# a connection lost inside a batch costs the whole batch this run (imaplib hands over
# nothing of an unfinished response), and for big messages the round trip hardly counts.
BATCH_SLICE = 64 * 1024
BATCH_BYTES = 1024 * 1024
BATCH_MAX = 32
# \Deleted flags are set in one UID STORE per this many messages (the expunge is at the end anyway).
STORE_BATCH = 100


class _Imap(imaplib.IMAP4):
    """IMAP4 whose socket has a timeout and, for implicit TLS, a verified TLS layer."""

    def __init__(self, host: str, port: int, timeout: float, context: Optional[ssl.SSLContext]) -> None:
        self.sp_timeout = timeout
        self._sp_context = context
        super().__init__(host, port)

    def _create_socket(self, timeout: Optional[float] = None) -> socket.socket:
        return open_socket(self.host, self.port, self.sp_timeout, self._sp_context)

    def xoauth2(self, response: bytes, initial: bool) -> Tuple[bool, bytes, bytes]:
        """AUTHENTICATE XOAUTH2 (with SASL-IR when `initial`); returns (ok, error challenge, tagged line).

        Sent by hand: imaplib's authenticate() has no SASL-IR, and its debug output must not see the token.
        """
        tag: bytes = self._new_tag()
        self.send(tag + b" AUTHENTICATE XOAUTH2" + (b" " + response if initial else b"") + b"\r\n")
        sent, challenge = initial, b""
        while True:
            line = self.readline()
            if not line:
                raise self.abort("connection closed during AUTHENTICATE")
            if line.startswith(tag + b" "):
                ok = line[len(tag) + 1:].upper().startswith(b"OK")
                if ok:
                    self.state = "AUTH"  # imaplib checks it before SELECT
                return ok, challenge, line.rstrip(b"\r\n")
            if line.startswith(b"+"):
                if sent:  # a continuation after the response is the server's error report
                    challenge = line[1:].strip()
                    self.send(sasl.FAILURE_ACK.encode("ascii") + b"\r\n")
                else:
                    self.send(response + b"\r\n")
                    sent = True

    def next_tag(self) -> bytes:
        """A fresh command tag from imaplib's own sequence, for a command imaplib cannot send (IDLE)."""
        # The subclass is the one place that touches imaplib's internals.
        tag: bytes = self._new_tag()
        return tag


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSource:
    """One logged-in IMAP session with the account's folder selected (read-write); a source.IdleSource."""

    protocol = "IMAP"

    def __init__(self, account: Account, imap: _Imap) -> None:
        self.host, self.port = account.host, account.port
        self.folder = account.folder
        self.greeting = ""
        self.uidvalidity = ""
        self._imap = imap
        self._deleted: List[str] = []
        self._to_flag: List[str] = []
        self._cache: Dict[str, Tuple[bytes, bool]] = {}  # uid -> (first bytes, partial fetch honoured)
        self._uidplus = False
        self._exists = -1
        self.utf8 = False  # RFC 6855 UTF8=ACCEPT is enabled
        self.capabilities: Tuple[bytes, ...] = ()  # as announced after login
        self._idle_tag = b""
        self._idle_early: List[bytes] = []  # untagged lines that came before IDLE's go-ahead
        self._idle_buffer = b""  # the start of a line not complete yet

    @classmethod
    def connect(cls, account: Account, timeout: float, credential: Optional[Credential] = None) -> ImapSource:
        """Connect, optionally STARTTLS, log in (by default with the password) and SELECT the folder."""
        login = credential if credential is not None else password_credential(account)
        tls = tls_for(account.security, account.ca_file)
        try:
            imap = _Imap(account.host, account.port, timeout, tls.on_connect)
        except imaplib.IMAP4.error as exc:
            raise ConnectError(f"{account.host}:{account.port} is not an IMAP server: {exc}") from None
        self = cls(account, imap)
        try:
            self.greeting = imap.welcome.decode("utf-8", "replace").strip()
            with network_errors(self.host, self.port):
                if tls.upgrade is not None:
                    try:
                        imap.starttls(ssl_context=tls.upgrade)
                    except imaplib.IMAP4.error as exc:
                        raise ConnectError(f"{self.host}:{self.port} STARTTLS failed: {exc}") from None
                self._login(login)
                typ, data = imap.capability()
                caps = data[0].upper().split() if typ == "OK" and data and data[0] else []
                self.capabilities = tuple(caps)
                self._uidplus = b"UIDPLUS" in caps
                self._enable_utf8(caps)
                typ, data = imap.select(_quote(account.folder))
                if typ != "OK":
                    raise ProtocolError(f"cannot open folder {account.folder!r}: {_text(data)}")
                self._exists = int(data[0]) if data and data[0] and data[0].isdigit() else -1
                typ, data = imap.response("UIDVALIDITY")
                if not data or data[0] is None:
                    raise ProtocolError(f"{self.host}:{self.port} reported no UIDVALIDITY for {account.folder!r}")
                self.uidvalidity = data[-1].decode("ascii", "replace")
        except BaseException:
            self.abort()
            raise
        return self

    def _login(self, login: Credential) -> None:
        """LOGIN with a password, AUTHENTICATE XOAUTH2 with an access token."""
        imap = self._imap
        if login.mechanism != "xoauth2":
            try:
                imap.login(login.username, login.secret.reveal())
            except imaplib.IMAP4.error as exc:
                raise AuthError(f"login to {self.host}:{self.port} refused: {_text(exc)}") from None
            return
        caps = tuple(c.upper() for c in imap.capabilities)
        if "AUTH=XOAUTH2" not in caps:
            raise ConnectError(f"{self.host}:{self.port} does not offer OAuth2 sign-in (no AUTH=XOAUTH2 in CAPABILITY)")
        response = sasl.initial_response(login.username, login.secret.reveal()).encode("ascii")
        try:
            ok, challenge, line = imap.xoauth2(response, initial="SASL-IR" in caps)
        except imaplib.IMAP4.abort as exc:
            raise ConnectError(f"{self.host}:{self.port} dropped the session during the OAuth2 login: "
                               f"{_text(exc)}") from None
        except imaplib.IMAP4.error as exc:
            raise AuthError(f"OAuth2 login to {self.host}:{self.port} failed: {_text(exc)}") from None
        if not ok:
            why = sasl.describe_failure(challenge) if challenge else "no reason given"
            raise AuthError(f"OAuth2 login to {self.host}:{self.port} refused ({why}): {_text(line)}")

    def _enable_utf8(self, caps: List[bytes]) -> None:
        """ENABLE UTF8=ACCEPT (RFC 6855) where offered: after login, before SELECT.

        Without it a server like Courier replaces a message with 8-bit headers by a wrapper,
        and its envelope headers are lost.
        """
        if b"UTF8=ACCEPT" not in caps or b"ENABLE" not in caps:
            return
        # imaplib checks ENABLE against the capabilities it saw before login.
        self._imap.capabilities = tuple(c.decode("ascii", "replace") for c in caps)
        try:
            typ, data = self._imap.enable("UTF8=ACCEPT")
        except imaplib.IMAP4.error as exc:
            log.warning("%s:%d offers UTF8=ACCEPT but refused to enable it: %s", self.host, self.port, _text(exc))
            return
        self.utf8 = typ == "OK"

    def _call(self, *args: Any) -> List[Any]:
        with network_errors(self.host, self.port):
            try:
                typ, data = self._imap.uid(*args)
            except imaplib.IMAP4.abort as exc:
                raise ConnectError(f"{self.host}:{self.port} dropped the session: {_text(exc)}") from None
            except imaplib.IMAP4.error as exc:
                raise ProtocolError(f"{self.host}:{self.port}: UID {args[0]} failed: {_text(exc)}") from None
        if typ != "OK":
            raise ProtocolError(f"{self.host}:{self.port}: UID {args[0]} answered {typ} {_text(data)}")
        return list(data)

    @property
    def exists(self) -> int:
        """The message count SELECT reported (-1 if the server did not say)."""
        return self._exists

    def list(self) -> List[RemoteMessage]:
        """UID and size of every message in the folder."""
        result: List[RemoteMessage] = []
        if self._exists == 0:
            return result  # some servers answer BAD to "1:*" on an empty folder
        for item in self._call("FETCH", "1:*", "(UID RFC822.SIZE)"):
            text = item[0] if isinstance(item, tuple) else item
            if not isinstance(text, bytes):
                continue
            uid = size = None
            for match in _FETCH_ITEM.finditer(text):
                if match.group(1):
                    uid = match.group(1).decode()
                if match.group(2):
                    size = int(match.group(2))
            if uid is not None:
                result.append(RemoteMessage(uid, size or 0, uid))
        return result

    def fetch_ahead(self, upcoming: Sequence[RemoteMessage]) -> None:
        """One UID FETCH for the next small messages (one round trip instead of one each)."""
        if self._cache:
            return  # the last batch is not used up yet
        wanted: List[str] = []
        total = 0
        for message in upcoming:
            if message.size > BATCH_SLICE or total + message.size > BATCH_BYTES or len(wanted) >= BATCH_MAX:
                break
            wanted.append(message.ref)
            total += message.size
        if len(wanted) < 2:
            return
        data = self._call("FETCH", ",".join(wanted), f"(UID BODY.PEEK[]<0.{BATCH_SLICE}>)")
        for index, item in enumerate(data):
            if not (isinstance(item, tuple) and b"BODY[]" in item[0]):
                continue
            # The UID may come before the literal or after it ("... {n}\r\n<bytes> UID 7)").
            found = _UID.search(item[0])
            if found is None and index + 1 < len(data) and isinstance(data[index + 1], bytes):
                found = _UID.search(data[index + 1])
            if found is not None and found.group(1).decode() in wanted:
                self._cache[found.group(1).decode()] = (item[1], b"BODY[]<" in item[0])

    def fetch(self, ref: str, sink: Sink) -> None:
        """Fetch the message in slices and pass each to `sink`."""
        offset = 0
        cached = self._cache.pop(ref, None)
        if cached is not None:
            first, honoured = cached
            if first:
                sink(first)
            if len(first) < BATCH_SLICE or not honoured:
                return
            offset = len(first)
        while True:
            chunk = None
            partial = True
            for item in self._call("FETCH", ref, f"(BODY.PEEK[]<{offset}.{SLICE}>)"):
                if isinstance(item, tuple) and b"BODY[]" in item[0]:
                    chunk = item[1]
                    # A server that ignores the <offset.length> part sends the whole message
                    # without the "<offset>" origin; asking again would repeat it.
                    partial = b"BODY[]<" in item[0]
            if chunk is None:
                if offset == 0:
                    raise ProtocolError(f"message UID {ref} vanished from {self.folder!r}")
                return
            if chunk:
                sink(chunk)
            offset += len(chunk)
            if len(chunk) < SLICE or not partial:
                return

    def delete(self, ref: str) -> None:
        """Flag \\Deleted (batched); the expunge happens in finish()."""
        self._to_flag.append(ref)
        if len(self._to_flag) >= STORE_BATCH:
            self._flag()

    def _flag(self) -> None:
        refs, self._to_flag = self._to_flag, []
        if refs:
            self._call("STORE", ",".join(refs), "+FLAGS.SILENT", "(\\Deleted)")
            self._deleted.extend(refs)

    def finish(self) -> List[RefusedDelete]:
        """UID EXPUNGE exactly our messages (plain EXPUNGE without UIDPLUS), then LOGOUT.

        Returns no refused deletions: a refused STORE or EXPUNGE fails the whole command.
        """
        try:
            self._flag()
            if self._deleted:
                if self._uidplus:
                    self._call("EXPUNGE", ",".join(self._deleted))
                else:
                    with network_errors(self.host, self.port):
                        self._imap.expunge()
                self._deleted = []
            with network_errors(self.host, self.port):
                self._imap.logout()
        finally:
            self.abort()
        return []

    def abort(self) -> None:
        """Close the socket; flagged messages stay until a later expunge."""
        try:
            self._imap.shutdown()
        except (OSError, AttributeError, imaplib.IMAP4.error):
            pass


    # --- IMAP IDLE (RFC 2177): imaplib has no idle() before Python 3.14 --------------------
    def idle_start(self) -> None:
        """Send IDLE and wait for the server's go-ahead (blocking, with the session's timeout)."""
        imap = self._imap
        self._idle_tag = imap.next_tag()
        with network_errors(self.host, self.port):
            imap.send(self._idle_tag + b" IDLE\r\n")
            line = imap.readline()
            while line.startswith(b"* "):  # untagged news before the go-ahead: handed to idle_read
                self._idle_early.append(line.rstrip(b"\r\n"))
                line = imap.readline()
        if not line.startswith(b"+"):
            raise ProtocolError(f"{self.host}:{self.port} refused IDLE: {_text(line)}")

    def idle_fileno(self) -> int:
        """The socket to select() on while in IDLE."""
        assert self._imap.sock is not None
        return self._imap.sock.fileno()

    def idle_read(self) -> Optional[List[bytes]]:
        """Lines the server sent during IDLE, without blocking; None once the connection is closed."""
        imap = self._imap
        lines, self._idle_early = self._idle_early, []
        sock = imap.sock
        if sock is None:
            return None
        data = b""
        closed = False
        # Readable with nothing to read is the end; tells a plain socket's b'' apart from "no data yet".
        readable = bool(select.select([sock], [], [], 0)[0])
        sock.setblocking(False)
        try:
            while True:
                # read1 hands out what imaplib's buffer already holds before it reads the socket.
                try:
                    chunk = imap.file.read1(65536)  # type: ignore[union-attr]
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                except OSError:
                    closed = True
                    break
                if not chunk:
                    # TLS reports "nothing more now" as SSLWantReadError, so b'' is the end. A
                    # plain socket says b'' for both: the end only if it was readable and gave nothing.
                    closed = isinstance(sock, ssl.SSLSocket) or (readable and not data)
                    break
                data += chunk
        finally:
            if not closed:
                sock.settimeout(imap.sp_timeout)
        *complete, self._idle_buffer = (self._idle_buffer + data).split(b"\r\n")
        lines.extend(complete)
        if closed and not lines:
            return None
        return lines

    def idle_done(self) -> List[bytes]:
        """End IDLE (DONE), wait for its tagged completion (blocking); returns the untagged lines seen."""
        imap = self._imap
        seen: List[bytes] = []
        with network_errors(self.host, self.port):
            imap.send(b"DONE\r\n")
            while True:
                line = imap.readline()
                if not line:
                    raise ProtocolError(f"{self.host}:{self.port} closed the connection after DONE")
                if line.startswith(self._idle_tag + b" "):
                    if not line[len(self._idle_tag) + 1:].upper().startswith(b"OK"):
                        raise ProtocolError(f"{self.host}:{self.port} ended IDLE with {_text(line)}")
                    return seen
                seen.append(line.rstrip(b"\r\n"))


def _text(value: Any) -> str:
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else str(value)
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:300]
