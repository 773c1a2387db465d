"""A MailPlus stand-in that logs commands and replies in the order they crossed the wire.

For the transaction tests: a lock-step client shows as command, reply, command, reply; a
pipelining one (RFC 2920) as several commands, then their replies. Like a real server it
answers a whole pipelined write at once: it waits briefly for more input before it replies,
so one write of the client is one group in the log however TCP delivers it.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from typing import Dict, List, Optional

# How long the server waits for more of a pipelined write before it answers what it has.
SETTLE = 0.05


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        owner = self.server.owner
        sock: socket.socket = self.request
        conversation = _Conversation(owner)
        sock.sendall(b"220 order.test ESMTP\r\n")
        buffer = b""
        while not conversation.closed:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while select.select([sock], [], [], SETTLE)[0]:
                more = sock.recv(65536)
                if not more:
                    break
                buffer += more
            *lines, buffer = buffer.split(b"\r\n")
            replies: List[str] = []
            for line in lines:
                reply = conversation.take(line)
                if reply is not None:
                    replies.append(reply)
                if conversation.closed:
                    break  # after 221 or 421 the server reads nothing more
            owner.record([f"S: {reply}" for reply in replies])
            if replies:
                sock.sendall("".join(f"{reply}\r\n" for reply in replies).encode("ascii"))


class _Conversation:
    """One connection's SMTP state: the open transaction and whether DATA is being read."""

    def __init__(self, owner: OrderSmtp) -> None:
        self.owner = owner
        self.mail = False
        self.rcpts = 0
        self.body: Optional[List[bytes]] = None
        self.closed = False

    def take(self, line: bytes) -> Optional[str]:
        """The reply to one line from the client (None inside DATA until the dot)."""
        if self.body is not None:
            if line != b".":
                self.body.append(line)
                return None
            self.owner.record(["C: <body>", "C: ."])
            self.owner.bodies.append(b"\r\n".join(self.body) + b"\r\n")
            self.body, self.mail, self.rcpts = None, False, 0
            return self.owner.replies.get(".", "250 2.0.0 Ok: queued")
        text = line.decode("utf-8", "replace")
        self.owner.record([f"C: {text}"])
        verb = text[:4].upper()
        if verb == "EHLO":
            extensions = ["order.test", "8BITMIME"] + (["PIPELINING"] if self.owner.pipelining else [])
            return "\r\n".join([f"250-{e}" for e in extensions[:-1]] + [f"250 {extensions[-1]}"])
        reply = self.owner.replies.get(text)
        if verb == "MAIL":
            reply = reply or "250 2.1.0 Ok"
            self.mail, self.rcpts = reply.startswith("250"), 0
        elif verb == "RCPT":
            reply = "503 5.5.1 Error: need MAIL command" if not self.mail else reply or "250 2.1.5 Ok"
            self.rcpts += reply.startswith("250")
        elif verb == "DATA":
            reply = ("503 5.5.1 Error: need RCPT command" if not self.mail or not self.rcpts
                     else reply or "354 End data with <CR><LF>.<CR><LF>")
            if reply.startswith("354"):
                self.body = []
        elif verb == "RSET":
            self.mail, self.rcpts = False, 0
            reply = reply or "250 2.0.0 Ok"
        elif verb == "QUIT":
            self.closed = True
            reply = "221 2.0.0 Bye"
        reply = reply or "502 5.5.2 Error: command not recognized"
        self.closed = self.closed or reply.startswith("421")
        return reply


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: OrderSmtp


class OrderSmtp:
    """One running server on a free loopback port; `replies` maps an exact command line (or '.') to its reply."""

    def __init__(self, pipelining: bool, replies: Optional[Dict[str, str]] = None) -> None:
        self.pipelining = pipelining
        self.replies = dict(replies or {})
        self.bodies: List[bytes] = []
        self._events: List[str] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OrderSmtp:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()

    def record(self, events: List[str]) -> None:
        """Append to the log (the handler's side)."""
        with self._lock:
            self._events.extend(events)

    def events(self) -> List[str]:
        """Everything but EHLO so far: 'C: <command>' and 'S: <reply>' in wire order."""
        with self._lock:
            return [e for e in self._events if not e.upper().startswith(("C: EHLO", "S: 250-ORDER.TEST"))]

    def clear(self) -> None:
        """Forget what was seen (between the steps of a test)."""
        with self._lock:
            self._events.clear()
        self.bodies.clear()
