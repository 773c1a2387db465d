"""A small streaming POP3 client (RFC 1939, STLS of RFC 2595, PIPELINING of RFC 2449).

poplib's RETR returns the whole message as a list of lines (memory grows ~5x the
message); this client streams each message straight into the spool, scanning whole
buffers with bytes.find instead of looping over lines in Python.

When the server lists PIPELINING in CAPA, the next RETRs and the DELEs are sent without
waiting for the previous answer; the answers are read back in order. A DELE is only ever
sent by the runner after the message's record is durable, and RFC 1939 deletes nothing
before QUIT, so pipelining changes when bytes travel, not what is deleted.
"""

from __future__ import annotations

import collections
import logging
import socket
from typing import Deque, List, Optional, Sequence, Tuple

from smartpop.collector.credential import Credential, password_credential
from smartpop.collector.source import RefusedDelete, RemoteMessage, Sink
from smartpop.collector.transport import network_errors, nodelay, open_socket, tls_for, wrap
from smartpop.config.schema import Account
from smartpop.errors import AuthError, ConnectError, ProtocolError
from smartpop.oauth import sasl

log = logging.getLogger(__name__)

STATUS_LINE_MAX = 8192
CHUNK = 64 * 1024
# Below malloc's mmap threshold: a bigger recv() buffer was mmap'ed and unmapped on every
# call (one TLS record is at most 16 KB anyway).
RECV = 32 * 1024
# RETRs in flight at once with PIPELINING: enough to hide a round trip, few enough that the
# kernel's socket buffers (not our memory) hold what has not been read yet.
WINDOW = 4
# Test seam: False makes the client behave as if the server had not offered PIPELINING.
USE_PIPELINING = True


def _line_with_dot(block: bytes, start: int) -> int:
    """Offset of the next line after `start` that begins with a ".", or -1."""
    found = block.find(b"\n.", start)
    return found + 1 if found >= 0 else -1


class Pop3Source:
    """One logged-in POP3 session (a source.Source)."""

    protocol = "POP3"
    folder = ""  # POP3 has one maildrop and no folders
    uidvalidity = ""  # UIDL ids are stable on their own

    def __init__(self, account: Account, timeout: float) -> None:
        self.host, self.port = account.host, account.port
        self._timeout = timeout
        self._sock: Optional[socket.socket] = None
        self._buf = bytearray()
        self.pipelining = False
        self.utf8 = False  # RFC 6856 UTF-8 mode is on
        # Commands sent whose answers are not read yet, oldest first: (verb, message number).
        self._expect: Deque[Tuple[str, str]] = collections.deque()
        self._out: List[bytes] = []  # pipelined command lines not sent yet (see _send)
        self.greeting = ""
        self._refused: List[RefusedDelete] = []  # DELEs the server refused, for finish()

    @classmethod
    def connect(cls, account: Account, timeout: float, credential: Optional[Credential] = None) -> Pop3Source:
        """Connect with the account's security mode and log in (by default with the password)."""
        login = credential if credential is not None else password_credential(account)
        self = cls(account, timeout)
        tls = tls_for(account.security, account.ca_file)
        try:
            self._attach(open_socket(account.host, account.port, timeout, tls.on_connect))
            self.greeting = self._status()
            if tls.upgrade is not None:
                try:
                    self._command("STLS")
                except ProtocolError as exc:
                    raise ConnectError(f"{self.host}:{self.port} does not offer STLS ({exc})") from None
                with network_errors(self.host, self.port):
                    assert self._sock is not None
                    if self._buf:
                        raise ConnectError(f"{self.host}:{self.port} sent data before the TLS handshake")
                    self._attach(wrap(self._sock, tls.upgrade, self.host))
            self._ask_utf8()
            if login.mechanism == "xoauth2":
                self._login_xoauth2(login.username, login.secret.reveal())
            else:
                self._login(login.username, login.secret.reveal())
            self.pipelining = USE_PIPELINING and "PIPELINING" in self._capabilities()
        except BaseException:
            self.abort()
            raise
        return self

    def _attach(self, sock: socket.socket) -> None:
        nodelay(sock)
        self._sock = sock
        self._buf = bytearray()

    def _send(self, line: str, later: bool = False) -> None:
        """Send a command line; with `later`, only queue it until the next read or send.

        Pipelined RETRs and DELEs go out together with whatever is sent or read next: each
        separate send was a TLS record, a syscall and a GIL hand-off of its own.
        """
        if self._sock is None:
            raise ConnectError(f"connection to {self.host}:{self.port} is closed")
        data = line.encode("utf-8") + b"\r\n"
        if later:
            self._out.append(data)
            return
        self._flush(data)

    def _flush(self, data: bytes = b"") -> None:
        """Send the queued command lines, then `data`."""
        if self._out:
            data = b"".join(self._out) + data
            self._out = []
        if not data:
            return
        if self._sock is None:
            raise ConnectError(f"connection to {self.host}:{self.port} is closed")
        with network_errors(self.host, self.port):
            self._sock.sendall(data)

    def _fill(self) -> None:
        """Read more from the socket into the buffer; a closed connection is an error."""
        if self._out:
            self._flush()  # the answer may be to a queued command
        if self._sock is None:
            raise ConnectError(f"connection to {self.host}:{self.port} is closed")
        with network_errors(self.host, self.port):
            data = self._sock.recv(RECV)
        if not data:
            raise ConnectError(f"connection to {self.host}:{self.port} lost")
        self._buf += data

    def _readline(self, limit: int = STATUS_LINE_MAX) -> bytes:
        while True:
            nl = self._buf.find(b"\n", 0, limit)
            if nl >= 0 or len(self._buf) >= limit:
                end = nl + 1 if nl >= 0 else limit
                line = bytes(self._buf[:end])
                del self._buf[:end]
                return line
            self._fill()

    def _status(self) -> str:
        line = self._readline().rstrip(b"\r\n").decode("utf-8", "replace")
        if line.startswith("+OK"):
            return line[3:].strip()
        raise ProtocolError(line[:300] or "empty reply")

    def _command(self, line: str) -> str:
        self._drain()
        self._send(line)
        return self._status()

    def _login(self, username: str, password: str) -> None:
        try:
            self._command(f"USER {username}")
            self._send(f"PASS {password}")
            self._status()
        except ProtocolError as exc:
            raise AuthError(f"login to {self.host}:{self.port} refused: {exc}") from None

    def _login_xoauth2(self, username: str, token: str) -> None:
        """AUTH XOAUTH2 (RFC 5034): the response on the command line only while it fits in 255 octets."""
        sasl_line = [line for line in self._capa_lines() if line.upper().startswith("SASL ")]
        if not sasl_line or sasl.MECHANISM not in sasl_line[0].upper().split()[1:]:
            raise ConnectError(f"{self.host}:{self.port} does not offer OAuth2 sign-in "
                               "(no XOAUTH2 in CAPA's SASL line)")
        first, after = sasl.pop3_auth_lines(sasl.initial_response(username, token))
        self._drain()
        self._send(first)
        challenge = ""
        while True:
            line = self._readline().rstrip(b"\r\n").decode("utf-8", "replace")
            if line.startswith("+OK"):
                return
            if line.startswith("+") and after is not None:  # the go-ahead for the response
                self._send(after)
                after = None
            elif line.startswith("+"):  # after the response: the server's error report
                challenge = line[1:].strip()
                self._send(sasl.FAILURE_ACK)
            else:
                why = sasl.describe_failure(challenge) if challenge else "no reason given"
                raise AuthError(f"OAuth2 login to {self.host}:{self.port} refused ({why}): {line[:300]}")

    def _ask_utf8(self) -> None:
        """Turn on UTF-8 mode (RFC 6856) where CAPA offers it; the command is only valid before login.

        Without it a server like Courier replaces a message with 8-bit headers by a wrapper:
        its envelope headers are gone (the copy goes to the fallback) and it differs per RETR.
        """
        if "UTF8" not in self._capabilities():
            return
        try:
            self._command("UTF8")
        except ProtocolError as exc:
            log.warning("%s:%d offers UTF8 but refused it: %s", self.host, self.port, exc)
            return
        self.utf8 = True

    def _capabilities(self) -> List[str]:
        """CAPA's keywords (upper case); [] for a server without CAPA."""
        return [line.split(" ", 1)[0].upper() for line in self._capa_lines() if line]

    def _capa_lines(self) -> List[str]:
        """CAPA's lines with their arguments; [] for a server without CAPA."""
        try:
            self._command("CAPA")
        except ProtocolError:
            return []
        return [line.decode("ascii", "replace") for line in self._multiline()]

    def _body(self, sink: Optional[Sink]) -> None:
        """Read a multi-line answer up to its "." line, un-dot-stuffed, into `sink` (None: discard).

        Works on whole buffers: only the (rare) line starts with a "." are looked at one by one.
        """
        at_start = True  # the buffer starts at the beginning of a line
        buf = self._buf
        while True:
            nl = buf.rfind(b"\n")
            if nl < 0:
                if len(buf) >= CHUNK:  # inside a very long line: pass a piece through
                    piece = bytes(buf)
                    del buf[:]
                    if at_start and piece.startswith(b".."):
                        piece = piece[1:]
                    if sink is not None:
                        sink(piece)
                    at_start = False
                    continue
                self._fill()
                continue
            block = bytes(buf[:nl + 1])
            emitted = 0
            dot = 0 if at_start and block.startswith(b".") else _line_with_dot(block, 0)
            while dot >= 0:
                if block.startswith(b".\r\n", dot) or block.startswith(b".\n", dot):
                    if sink is not None and dot > emitted:
                        sink(block[emitted:dot])
                    del buf[:dot + (3 if block.startswith(b".\r\n", dot) else 2)]
                    return
                if block.startswith(b"..", dot):
                    if sink is not None and dot > emitted:
                        sink(block[emitted:dot])
                    emitted = dot + 1  # drop the stuffed dot
                dot = _line_with_dot(block, dot)
            if sink is not None and len(block) > emitted:
                sink(block[emitted:])
            del buf[:nl + 1]
            at_start = True

    def _multiline(self) -> List[bytes]:
        data = bytearray()
        self._body(data.extend)
        return [line.rstrip(b"\r") for line in bytes(data).split(b"\n")[:-1]]

    def _answer(self, verb: str, ref: str, sink: Optional[Sink] = None) -> None:
        """Read the answer to the oldest command in flight."""
        if verb == "RETR":
            self._status()
            self._body(sink)
            return
        try:
            self._status()
        except ProtocolError as exc:  # DELE: the message stays; the store retries the deletion
            log.warning("%s:%d refused DELE %s: %s", self.host, self.port, ref, exc)
            self._refused.append(RefusedDelete(ref, str(exc)))

    def _drain(self) -> None:
        """Read every answer still in flight (unread RETR bodies are discarded)."""
        while self._expect:
            verb, ref = self._expect.popleft()
            try:
                self._answer(verb, ref)
            except ProtocolError:
                pass  # a refused RETR nobody waits for any more

    def list(self) -> List[RemoteMessage]:
        """UIDL and LIST of the whole maildrop."""
        self._command("UIDL")
        uids = {}
        for line in self._multiline():
            parts = line.split()
            if len(parts) >= 2:
                uids[parts[0].decode("ascii", "replace")] = parts[1].decode("ascii", "replace")
        self._command("LIST")
        result = []
        for line in self._multiline():
            parts = line.split()
            if len(parts) >= 2 and parts[0].decode("ascii", "replace") in uids:
                number = parts[0].decode("ascii")
                result.append(RemoteMessage(uids[number], int(parts[1]), number))
        return result

    def fetch_ahead(self, upcoming: Sequence[RemoteMessage]) -> None:
        """With PIPELINING: ask for the next messages now, so they travel while this one is handled."""
        if not self.pipelining:
            return
        asked = {ref for verb, ref in self._expect if verb == "RETR"}
        for message in upcoming:
            if len(asked) >= WINDOW:
                break
            if message.ref not in asked:
                self._send(f"RETR {message.ref}", later=True)
                self._expect.append(("RETR", message.ref))
                asked.add(message.ref)
        self._flush()  # the new RETRs (and DELEs queued before them) in one write, on their way now

    def fetch(self, ref: str, sink: Sink) -> None:
        """RETR, un-dot-stuffing straight into `sink`."""
        if ("RETR", ref) not in self._expect:
            self._drain()
            self._send(f"RETR {ref}")
            self._expect.append(("RETR", ref))
        while self._expect:
            verb, number = self._expect.popleft()
            if verb == "RETR" and number == ref:
                self._answer(verb, number, sink)
                return
            try:
                self._answer(verb, number)
            except ProtocolError:
                pass  # an earlier RETR the runner no longer wants

    def delete(self, ref: str) -> None:
        """DELE: only a mark until QUIT (pipelined: its answer is read with the next one)."""
        if self.pipelining:
            self._send(f"DELE {ref}", later=True)
            self._expect.append(("DELE", ref))
            return
        self._drain()
        self._send(f"DELE {ref}")
        self._answer("DELE", ref)

    def finish(self) -> List[RefusedDelete]:
        """QUIT: the server deletes the marked messages now; returns the DELEs it refused."""
        try:
            self._command("QUIT")
        finally:
            self.abort()
        return self._refused

    def abort(self) -> None:
        """Close without QUIT: RFC 1939 says nothing marked is deleted then."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._expect.clear()
        self._out = []
