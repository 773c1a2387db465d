"""A small POP3 server on loopback that behaves like servers the Dovecot rig cannot imitate.

- `reuse`: UIDLs are whatever the test says, so a new message can get a UIDL an old one had
  (servers that break RFC 1939's "never reused" rule).
- `courier_utf8`: like Courier with UTF8 in CAPA: until the client sends the UTF8 command
  (RFC 6856, only valid before login), a message with 8-bit bytes in its header is replaced
  by a "Cannot display Unicode content" wrapper whose boundary changes on every RETR.

- `xoauth2_tokens`: AUTH XOAUTH2 (RFC 5034, with or without an initial response) accepts these
  access tokens (token -> user) and answers any other with the error challenge of
  `XOAUTH2_FAILURE`; `lines` keeps every line received, byte for byte.

Plain TCP (security "none"), one thread per connection, deletions happen at QUIT.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence, Set, Tuple


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


# What a server says about a refused token (Gmail's form).
XOAUTH2_FAILURE = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}


def xoauth2_user(response: bytes, tokens: Dict[str, str]) -> Optional[str]:
    """The user a XOAUTH2 client response logs in, or None if its token is not one of `tokens`."""
    try:
        fields = base64.b64decode(response.strip(), validate=True).decode().split("\x01")
    except ValueError:
        return None
    values = dict(f.split("=", 1) for f in fields if "=" in f)
    user, auth = values.get("user", ""), values.get("auth", "")
    if fields[-2:] != ["", ""] or not auth.startswith("Bearer "):
        return None
    return user if tokens.get(auth[len("Bearer "):]) == user else None


def xoauth2_challenge() -> str:
    """The base64 error challenge a server sends for a refused token."""
    return base64.b64encode(json.dumps(XOAUTH2_FAILURE).encode()).decode()


class FakePop3:
    """See the module docstring; `messages` is a list of [uidl, bytes] the test may change between runs."""

    def __init__(self, messages: Sequence[Tuple[str, bytes]], user: str = "sammel@provider.test",
                 password: str = "secret-pw", capa: Sequence[str] = ("UIDL", "USER", "TOP"),
                 courier_utf8: bool = False, xoauth2_tokens: Optional[Dict[str, str]] = None) -> None:
        self.messages: List[List[object]] = [[uid, data] for uid, data in messages]
        self.user, self.password = user, password
        self.capa = list(capa) + (["UTF8"] if courier_utf8 and "UTF8" not in capa else [])
        self.courier_utf8 = courier_utf8
        self.xoauth2_tokens: Dict[str, str] = dict(xoauth2_tokens or {})
        if self.xoauth2_tokens and not any(c.startswith("SASL") for c in self.capa):
            self.capa.append("SASL PLAIN XOAUTH2")
        self.lines: List[bytes] = []  # every line received, as sent
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
        with self._lock:
            view = [list(m) for m in self.messages]  # the maildrop as of login (RFC 1939 locks it)
        session = _Session(self, conn, view)
        session.reader = reader
        try:
            session.send("+OK fake POP3 ready")
            while True:
                raw = reader.readline()
                if not raw:
                    return
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                with self._lock:
                    self.lines.append(raw)
                    self.commands.append("PASS ***" if verb == "PASS" else line)
                if not session.run(verb, arg):
                    return
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


class _Session:
    """One connection's state (logged in, UTF8 mode, its view of the maildrop, what it deleted) and its commands.

    Each command answers and says whether the connection goes on.
    """

    def __init__(self, server: FakePop3, conn: socket.socket, view: List[List[object]]) -> None:
        self.server, self.conn, self.view = server, conn, view
        self.state = "auth"
        self.utf8 = False
        self.user_ok = False
        self.deleted: Set[int] = set()
        self.reader: Optional[BinaryIO] = None

    def run(self, verb: str, arg: str) -> bool:
        """Answer one command; False once the connection is to end."""
        command = _ANY_STATE.get(verb) or (_AUTH if self.state == "auth" else _TRANSACTION).get(verb)
        if command is None:
            self.send("-ERR log in first" if self.state != "trans" else "-ERR unknown command")
            return True
        return command(self, arg)

    def send(self, line: str) -> None:
        self.conn.sendall(line.encode("utf-8") + b"\r\n")

    def multi(self, lines: List[bytes]) -> None:
        out = b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines) + b".\r\n"
        self.conn.sendall(out)

    def capa(self, arg: str) -> bool:
        self.send("+OK")
        self.multi([c.encode() for c in self.server.capa])
        return True

    def utf8_mode(self, arg: str) -> bool:
        if self.state != "auth" or "UTF8" not in self.server.capa:
            self.send("-ERR UTF8 only before login")
        else:
            self.utf8 = True
            self.send("+OK UTF8 enabled")
        return True

    def user(self, arg: str) -> bool:
        self.user_ok = arg == self.server.user
        self.send("+OK")
        return True

    def password(self, arg: str) -> bool:
        if self.user_ok and arg == self.server.password:
            self.state = "trans"
            self.send("+OK logged in")
        else:
            self.send("-ERR [AUTH] wrong")
        return True

    def line(self) -> bytes:
        """Read one more line of the current command (an AUTH exchange)."""
        assert self.reader is not None
        raw = self.reader.readline()
        with self.server._lock:
            self.server.lines.append(raw)
        return raw

    def auth(self, arg: str) -> bool:
        mechanism, _, response = arg.partition(" ")
        if mechanism.upper() != "XOAUTH2" or not self.server.xoauth2_tokens:
            self.send("-ERR unsupported mechanism")
            return True
        if not response:
            self.send("+ ")
            response = self.line().rstrip(b"\r\n").decode()
        if xoauth2_user(response.encode(), self.server.xoauth2_tokens) is not None:
            self.state = "trans"
            self.send("+OK logged in")
            return True
        self.send("+ " + xoauth2_challenge())
        ack = self.line()
        self.send("-ERR [AUTH] invalid token" if ack == b"\r\n" else "-ERR expected an empty line")
        return True

    def quit(self, arg: str) -> bool:
        server = self.server
        if self.state == "trans":
            with server._lock:
                gone = [self.view[i - 1] for i in self.deleted]
                server.messages = [m for m in server.messages if not any(m is g or m == g for g in gone)]
        self.send("+OK bye")
        return False

    def uidl(self, arg: str) -> bool:
        return self.listing("UIDL")

    def list_sizes(self, arg: str) -> bool:
        return self.listing("LIST")

    def stat(self, arg: str) -> bool:
        return self.listing("STAT")

    def listing(self, verb: str) -> bool:
        live = [(i, m) for i, m in enumerate(self.view, 1) if i not in self.deleted]
        if verb == "STAT":
            self.send(f"+OK {len(live)} {sum(len(self.server._served(m, self.utf8)) for _, m in live)}")
        else:
            self.send("+OK")
            self.multi([f"{i} {m[0] if verb == 'UIDL' else len(self.server._served(m, self.utf8))}".encode()
                        for i, m in live])
        return True

    def retr(self, arg: str) -> bool:
        number = int(arg)
        if number in self.deleted or not 1 <= number <= len(self.view):
            self.send("-ERR no such message")
            return True
        data = self.server._served(self.view[number - 1], self.utf8)
        self.send(f"+OK {len(data)} octets")
        self.multi(data.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n"))
        return True

    def dele(self, arg: str) -> bool:
        if int(arg) in self.server.refuse_dele:
            self.send("-ERR message is locked")
        else:
            self.deleted.add(int(arg))
            self.send("+OK deleted")
        return True

    def noop(self, arg: str) -> bool:
        self.send("+OK")
        return True


_Command = Callable[[_Session, str], bool]
_ANY_STATE: Dict[str, _Command] = {"CAPA": _Session.capa, "UTF8": _Session.utf8_mode, "QUIT": _Session.quit}
_AUTH: Dict[str, _Command] = {"USER": _Session.user, "PASS": _Session.password, "AUTH": _Session.auth}
_TRANSACTION: Dict[str, _Command] = {
    "UIDL": _Session.uidl, "LIST": _Session.list_sizes, "STAT": _Session.stat, "RETR": _Session.retr,
    "DELE": _Session.dele, "NOOP": _Session.noop,
}
