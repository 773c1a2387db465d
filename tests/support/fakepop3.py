"""A small POP3 server on loopback that behaves like servers the Dovecot rig cannot imitate.

- `reuse`: UIDLs are whatever the test says, so a new message can get a UIDL an old one had
  (servers that break RFC 1939's "never reused" rule).
- `courier_utf8`: like Courier with UTF8 in CAPA: until the client sends the UTF8 command
  (RFC 6856, only valid before login), a message with 8-bit bytes in its header is replaced
  by a "Cannot display Unicode content" wrapper whose boundary changes on every RETR.

Plain TCP (security "none"), one thread per connection, deletions happen at QUIT.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import List, Optional, Sequence, Set, Tuple


def _header_is_8bit(data: bytes) -> bool:
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return any(byte > 127 for byte in head)


def courier_wrapper(data: bytes) -> bytes:
    """What such a server serves instead of a message with 8-bit headers (new boundary each time)."""
    boundary = os.urandom(8).hex()
    return (f"From: Mail Delivery Subsystem <MAILER-DAEMON@provider.test>\r\nSubject: Cannot display Unicode "
            f"content\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nThis message contains Unicode content that your "
            f"client did not ask for.\r\n--{boundary}--\r\n").encode()


class FakePop3:
    """See the module docstring; `messages` is a list of [uidl, bytes] the test may change between runs."""

    def __init__(self, messages: Sequence[Tuple[str, bytes]], user: str = "sammel@provider.test",
                 password: str = "secret-pw", capa: Sequence[str] = ("UIDL", "USER", "TOP"),
                 courier_utf8: bool = False) -> None:
        self.messages: List[List[object]] = [[uid, data] for uid, data in messages]
        self.user, self.password = user, password
        self.capa = list(capa) + (["UTF8"] if courier_utf8 and "UTF8" not in capa else [])
        self.courier_utf8 = courier_utf8
        self.commands: List[str] = []  # every command line received (PASS masked)
        self.refuse_dele: Set[int] = set()  # message numbers whose DELE is answered -ERR
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def start(self) -> FakePop3:
        """Accept connections in the background."""
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting."""
        self._stopping = True
        self._listener.close()

    def put(self, uid: str, data: bytes) -> None:
        """Add a message with the UIDL `uid` (which may be one a deleted message had)."""
        with self._lock:
            self.messages.append([uid, data])

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        state = "auth"
        utf8 = False
        user_ok = False
        with self._lock:
            view = [list(m) for m in self.messages]  # the maildrop as of login (RFC 1939 locks it)
        deleted: set = set()

        def send(line: str) -> None:
            conn.sendall(line.encode("utf-8") + b"\r\n")

        def multi(lines: List[bytes]) -> None:
            out = b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines) + b".\r\n"
            conn.sendall(out)

        try:
            send("+OK fake POP3 ready")
            while True:
                raw = reader.readline()
                if not raw:
                    return
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                with self._lock:
                    self.commands.append("PASS ***" if verb == "PASS" else line)
                if verb == "CAPA":
                    send("+OK")
                    multi([c.encode() for c in self.capa])
                elif verb == "UTF8":
                    if state != "auth" or "UTF8" not in self.capa:
                        send("-ERR UTF8 only before login")
                    else:
                        utf8 = True
                        send("+OK UTF8 enabled")
                elif verb == "USER" and state == "auth":
                    user_ok = arg == self.user
                    send("+OK")
                elif verb == "PASS" and state == "auth":
                    if user_ok and arg == self.password:
                        state = "trans"
                        send("+OK logged in")
                    else:
                        send("-ERR [AUTH] wrong")
                elif verb == "QUIT":
                    if state == "trans":
                        with self._lock:
                            gone = [view[i - 1] for i in deleted]
                            self.messages = [m for m in self.messages if not any(m is g or m == g for g in gone)]
                    send("+OK bye")
                    return
                elif state != "trans":
                    send("-ERR log in first")
                elif verb in ("UIDL", "LIST", "STAT"):
                    live = [(i, m) for i, m in enumerate(view, 1) if i not in deleted]
                    if verb == "STAT":
                        send(f"+OK {len(live)} {sum(len(self._served(m, utf8)) for _, m in live)}")
                    else:
                        send("+OK")
                        multi([f"{i} {m[0] if verb == 'UIDL' else len(self._served(m, utf8))}".encode()
                               for i, m in live])
                elif verb == "RETR":
                    number = int(arg)
                    if number in deleted or not 1 <= number <= len(view):
                        send("-ERR no such message")
                        continue
                    data = self._served(view[number - 1], utf8)
                    send(f"+OK {len(data)} octets")
                    multi(data.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n"))
                elif verb == "DELE" and int(arg) in self.refuse_dele:
                    send("-ERR message is locked")
                elif verb == "DELE":
                    deleted.add(int(arg))
                    send("+OK deleted")
                elif verb == "NOOP":
                    send("+OK")
                else:
                    send("-ERR unknown command")
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def _served(self, message: List[object], utf8: bool) -> bytes:
        data = message[1]
        assert isinstance(data, bytes)
        if self.courier_utf8 and not utf8 and _header_is_8bit(data):
            return courier_wrapper(data)
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
