"""A small streaming POP3 client (RFC 1939, STLS of RFC 2595).

poplib's RETR returns the whole message as a list of lines (memory grows ~5x the
message); this client streams each line straight into the spool.
"""

from __future__ import annotations

import logging
import socket
from typing import BinaryIO, List, Optional

from smartpop.collector.source import RemoteMessage, Sink, Source
from smartpop.collector.transport import network_errors, open_socket, tls_context
from smartpop.config.schema import Account
from smartpop.errors import AuthError, ConnectError, ProtocolError

log = logging.getLogger(__name__)

STATUS_LINE_MAX = 8192
CHUNK = 64 * 1024


class Pop3Source(Source):
    """One logged-in POP3 session."""

    protocol = "POP3"

    def __init__(self, account: Account, timeout: float) -> None:
        self.host, self.port = account.host, account.port
        self._timeout = timeout
        self._sock: Optional[socket.socket] = None
        self._file: Optional[BinaryIO] = None

    @classmethod
    def connect(cls, account: Account, timeout: float) -> Pop3Source:
        """Connect with the account's security mode and log in."""
        self = cls(account, timeout)
        context = tls_context(account.ca_file) if account.security != "none" else None
        try:
            self._attach(open_socket(account.host, account.port, timeout,
                                     context if account.security == "ssl" else None))
            self.greeting = self._status()
            if account.security == "starttls":
                assert context is not None
                try:
                    self._command("STLS")
                except ProtocolError as exc:
                    raise ConnectError(f"{self.host}:{self.port} does not offer STLS ({exc})") from None
                with network_errors(self.host, self.port):
                    assert self._sock is not None
                    self._attach(context.wrap_socket(self._sock, server_hostname=self.host))
            self._login(account.username, account.password.reveal())
        except BaseException:
            self.abort()
            raise
        return self

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")

    def _send(self, line: str) -> None:
        if self._sock is None:
            raise ConnectError(f"connection to {self.host}:{self.port} is closed")
        with network_errors(self.host, self.port):
            self._sock.sendall(line.encode("utf-8") + b"\r\n")

    def _readline(self, limit: int = STATUS_LINE_MAX) -> bytes:
        assert self._file is not None
        with network_errors(self.host, self.port):
            line = self._file.readline(limit)
        if not line:
            raise ConnectError(f"connection to {self.host}:{self.port} lost")
        return line

    def _status(self) -> str:
        line = self._readline().rstrip(b"\r\n").decode("utf-8", "replace")
        if line.startswith("+OK"):
            return line[3:].strip()
        raise ProtocolError(line[:300] or "empty reply")

    def _command(self, line: str) -> str:
        self._send(line)
        return self._status()

    def _login(self, username: str, password: str) -> None:
        try:
            self._command(f"USER {username}")
            self._send(f"PASS {password}")
            self._status()
        except ProtocolError as exc:
            raise AuthError(f"login to {self.host}:{self.port} refused: {exc}") from None

    def _multiline(self) -> List[bytes]:
        lines: List[bytes] = []
        while True:
            line = self._readline().rstrip(b"\r\n")
            if line == b".":
                return lines
            lines.append(line[1:] if line.startswith(b"..") else line)

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

    def fetch(self, ref: str, sink: Sink) -> None:
        """RETR, un-dot-stuffing line by line straight into `sink`."""
        self._command(f"RETR {ref}")
        at_line_start = True
        while True:
            piece = self._readline(CHUNK)
            if at_line_start:
                if piece in (b".\r\n", b".\n"):
                    return
                if piece.startswith(b".."):
                    piece = piece[1:]
            sink(piece)
            at_line_start = piece.endswith(b"\n")

    def count(self) -> int:
        """STAT's message count."""
        return int(self._command("STAT").split()[0])

    def delete(self, ref: str) -> None:
        """DELE: only a mark until QUIT."""
        self._command(f"DELE {ref}")

    def finish(self) -> None:
        """QUIT: the server deletes the marked messages now."""
        try:
            self._command("QUIT")
        finally:
            self.abort()

    def abort(self) -> None:
        """Close without QUIT: RFC 1939 says nothing marked is deleted then."""
        for thing in (self._file, self._sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass
        self._file = None
        self._sock = None
