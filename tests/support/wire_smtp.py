"""A MailPlus stand-in that records every command line as the bytes that arrived.

For the SMTPUTF8 tests: whether `SMTPUTF8` is in its EHLO reply and whether it offers
PIPELINING are chosen per instance, so the same test sees both the pipelined and the
lock-step path. It accepts RCPT for the addresses in `mailboxes` (compared as UTF-8 text,
exactly) and refuses every other one with 550, like Postfix with a mailbox table.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Set


@dataclass
class Stored:
    """One message the server took: the MAIL line, the accepted recipients and the DATA bytes."""

    mail: bytes
    rcpts: List[str]
    data: bytes


@dataclass
class WireLog:
    """What the server saw and kept, shared with its handler threads."""

    lines: List[bytes] = field(default_factory=list)
    stored: List[Stored] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def _say(self, text: str) -> None:
        self.wfile.write(text.encode("ascii") + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        owner = self.server.owner
        self._say("220 wire.test ESMTP")
        mail: Optional[bytes] = None
        rcpts: List[str] = []
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.rstrip(b"\r\n")
            with owner.log.lock:
                owner.log.lines.append(line)
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                extensions = ["SIZE 10240000", "8BITMIME", *owner.extensions]
                self._say("\r\n".join(["250-wire.test"] + [f"250-{e}" for e in extensions[:-1]]
                                      + [f"250 {extensions[-1]}"]))
            elif verb == b"MAIL":
                mail, rcpts = line, []
                self._say("250 2.1.0 Ok")
            elif verb == b"RCPT":
                address = line.partition(b"<")[2].rpartition(b">")[0].decode("utf-8", "replace")
                if mail is not None and address in owner.mailboxes:
                    rcpts.append(address)
                    self._say("250 2.1.5 Ok")
                else:
                    self._say("550 5.1.1 User unknown")
            elif verb == b"DATA":
                if self._data(mail, rcpts):
                    mail, rcpts = None, []
            elif verb == b"RSET":
                mail, rcpts = None, []
                self._say("250 2.0.0 Ok")
            elif verb == b"QUIT":
                self._say("221 2.0.0 Bye")
                return
            else:
                self._say("250 2.0.0 Ok" if verb == b"NOOP" else "502 5.5.2 Error: command not recognized")


    def _data(self, mail: Optional[bytes], rcpts: List[str]) -> bool:
        """DATA: take the message for `rcpts` (True), or refuse it when there is no transaction (False)."""
        if mail is None or not rcpts:
            self._say("554 5.5.1 No valid recipients")
            return False
        self._say("354 End data with <CR><LF>.<CR><LF>")
        body = bytearray()
        while True:
            chunk = self.rfile.readline()
            if not chunk or chunk == b".\r\n":
                break
            body += chunk[1:] if chunk.startswith(b"..") else chunk  # undo dot-stuffing
        owner = self.server.owner
        with owner.log.lock:
            owner.log.stored.append(Stored(mail, list(rcpts), bytes(body)))
        self._say("250 2.0.0 Ok: queued")
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: WireSmtp


class WireSmtp:
    """One running server on a free loopback port; see the module docstring."""

    def __init__(self, mailboxes: Sequence[str], smtputf8: bool, pipelining: bool = True) -> None:
        self.mailboxes: Set[str] = set(mailboxes)
        self.extensions = (["PIPELINING"] if pipelining else []) + ["ENHANCEDSTATUSCODES"] + (
            ["SMTPUTF8"] if smtputf8 else [])
        self.log = WireLog()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WireSmtp:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()

    def commands(self) -> List[bytes]:
        """Every MAIL, RCPT and DATA line so far, as it arrived (EHLO, RSET, QUIT left out)."""
        with self.log.lock:
            return [line for line in self.log.lines if line[:4].upper() in (b"MAIL", b"RCPT", b"DATA")]

    def stored(self) -> List[Stored]:
        """The messages taken so far."""
        with self.log.lock:
            return list(self.log.stored)

    def clear(self) -> None:
        """Forget what was seen (between the steps of a test)."""
        with self.log.lock:
            self.log.lines.clear()
            self.log.stored.clear()

