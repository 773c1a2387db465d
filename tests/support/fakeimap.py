"""A minimal IMAP server on loopback that behaves like Courier about UTF-8 (RFC 6855).

It offers ENABLE and UTF8=ACCEPT; until a client sends `ENABLE UTF8=ACCEPT`, a message with
8-bit bytes in its header is served as a "Cannot display Unicode content" wrapper (as
fakepop3.courier_wrapper). Only what SmartPop's ImapSource uses is implemented: LOGIN,
CAPABILITY, ENABLE, SELECT, UID FETCH (UID, RFC822.SIZE, BODY.PEEK[]<o.n>), UID STORE,
UID EXPUNGE, LOGOUT, and AUTHENTICATE XOAUTH2 when `xoauth2_tokens` is given (with SASL-IR
unless `sasl_ir` is False; a refused token gets fakepop3's error challenge; `lines` keeps every
line received, byte for byte). Plain TCP (security "none"), one thread per connection.
"""

from __future__ import annotations

import re
import socket
import threading
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence, Set

from support.fakepop3 import _header_is_8bit, courier_wrapper, xoauth2_challenge, xoauth2_user

_PARTIAL = re.compile(r"BODY\.PEEK\[\]<(\d+)\.(\d+)>")
_CAPS = "IMAP4rev1 ENABLE UTF8=ACCEPT UIDPLUS"


def _uid_set(text: str, uids: Sequence[int]) -> List[int]:
    wanted: List[int] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        top = max(uids, default=0)
        start = top if low == "*" else int(low)
        end = start if not high else (top if high == "*" else int(high))
        wanted += [u for u in uids if min(start, end) <= u <= max(start, end)]
    return wanted


class FakeImap:
    """See the module docstring; `messages` maps UID -> bytes."""

    def __init__(self, messages: Sequence[bytes], user: str = "sammel@provider.test",
                 password: str = "secret-pw", xoauth2_tokens: Optional[Dict[str, str]] = None,
                 sasl_ir: bool = True) -> None:
        self.messages: Dict[int, bytes] = {i: m for i, m in enumerate(messages, 1)}
        self.user, self.password = user, password
        self.xoauth2_tokens: Dict[str, str] = dict(xoauth2_tokens or {})
        self.sasl_ir = sasl_ir
        self.caps = _CAPS + (" SASL-IR" if sasl_ir else "") + (" AUTH=XOAUTH2" if self.xoauth2_tokens else "")
        self.lines: List[bytes] = []  # every line received, as sent
        self.commands: List[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = False

    def start(self) -> FakeImap:
        """Accept connections in the background."""
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop accepting."""
        self._stopping = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        session = _Session(self, conn)
        session.reader = reader
        try:
            session.send(f"* OK [CAPABILITY {self.caps}] fake IMAP ready")
            while True:
                raw = reader.readline()
                if not raw:
                    return
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                tag, _, rest = line.partition(" ")
                verb, _, args = rest.partition(" ")
                verb = verb.upper()
                with self._lock:
                    self.lines.append(raw)
                    self.commands.append(f"{verb} ***" if verb == "LOGIN" else rest)
                command = _COMMANDS.get(verb, _Session.unknown)
                if not command(session, tag, args):
                    return
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def _uid(self, tag: str, args: str, send, view, flagged: Set[int], conn: socket.socket) -> None:  # type: ignore[no-untyped-def]
        sub, _, rest = args.partition(" ")
        sub = sub.upper()
        uids = sorted(self.messages)
        if sub == "FETCH":
            which, _, items = rest.partition(" ")
            partial = _PARTIAL.search(items)
            for uid in _uid_set(which, uids):
                seq = uids.index(uid) + 1
                if partial is None:
                    send(f"* {seq} FETCH (UID {uid} RFC822.SIZE {len(view(uid))})")
                    continue
                start, length = int(partial.group(1)), int(partial.group(2))
                piece = view(uid)[start:start + length]
                conn.sendall(f"* {seq} FETCH (UID {uid} BODY[]<{start}> {{{len(piece)}}}\r\n".encode() + piece
                             + b")\r\n")
        elif sub == "STORE":
            flagged.update(_uid_set(rest.partition(" ")[0], uids))
        elif sub == "EXPUNGE":
            for uid in _uid_set(rest, uids):
                if uid in flagged:
                    with self._lock:
                        self.messages.pop(uid, None)
        else:
            send(f"{tag} BAD unknown")
            return
        send(f"{tag} OK done")


class _Session:
    """One connection's state (UTF-8 enabled, what it was shown, what it flagged) and its commands.

    Each command answers with its tagged line and says whether the connection goes on.
    """

    def __init__(self, server: FakeImap, conn: socket.socket) -> None:
        self.server, self.conn = server, conn
        self.utf8 = False
        self.served: Dict[int, bytes] = {}  # what this session shows for each uid (the wrapper is made once)
        self.flagged: Set[int] = set()
        self.reader: Optional[BinaryIO] = None

    def send(self, text: str) -> None:
        self.conn.sendall(text.encode("utf-8") + b"\r\n")

    def view(self, uid: int) -> bytes:
        if uid not in self.served:
            data = self.server.messages[uid].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self.served[uid] = data if self.utf8 or not _header_is_8bit(data) else courier_wrapper(data)
        return self.served[uid]

    def capability(self, tag: str, args: str) -> bool:
        self.send(f"* CAPABILITY {self.server.caps}")
        return self.done(tag, args)

    def login(self, tag: str, args: str) -> bool:
        user, _, password = args.partition(" ")
        if user.strip('"') != self.server.user or password.strip('"') != self.server.password:
            self.send(f"{tag} NO [AUTHENTICATIONFAILED] wrong")
            return True
        return self.done(tag, args)

    def authenticate(self, tag: str, args: str) -> bool:
        mechanism, _, response = args.partition(" ")
        server = self.server
        if mechanism.upper() != "XOAUTH2" or not server.xoauth2_tokens or (response and not server.sasl_ir):
            self.send(f"{tag} BAD not supported")
            return True
        if not response:
            self.send("+ ")
            response = self.line().rstrip(b"\r\n").decode()
        if xoauth2_user(response.encode(), server.xoauth2_tokens) is not None:
            return self.done(tag, args)
        self.send("+ " + xoauth2_challenge())
        ack = self.line()
        self.send(f"{tag} NO [AUTHENTICATIONFAILED] invalid token" if ack == b"\r\n" else f"{tag} BAD no empty line")
        return True

    def line(self) -> bytes:
        """Read one more line of the current command (an AUTHENTICATE exchange)."""
        assert self.reader is not None
        raw = self.reader.readline()
        with self.server._lock:
            self.server.lines.append(raw)
        return raw

    def enable(self, tag: str, args: str) -> bool:
        if "UTF8=ACCEPT" in args.upper():
            self.utf8 = True
            self.send("* ENABLED UTF8=ACCEPT")
        return self.done(tag, args)

    def select(self, tag: str, args: str) -> bool:
        self.send(f"* {len(self.server.messages)} EXISTS")
        self.send("* OK [UIDVALIDITY 7] ok")
        self.send(f"{tag} OK [READ-WRITE] selected")
        return True

    def uid(self, tag: str, args: str) -> bool:
        self.server._uid(tag, args, self.send, self.view, self.flagged, self.conn)
        return True

    def logout(self, tag: str, args: str) -> bool:
        self.send("* BYE")
        self.send(f"{tag} OK bye")
        return False

    def done(self, tag: str, args: str) -> bool:
        self.send(f"{tag} OK done")
        return True

    def unknown(self, tag: str, args: str) -> bool:
        self.send(f"{tag} BAD unknown")
        return True


_COMMANDS: Dict[str, Callable[[_Session, str, str], bool]] = {
    "CAPABILITY": _Session.capability, "LOGIN": _Session.login, "AUTHENTICATE": _Session.authenticate,
    "ENABLE": _Session.enable,
    "SELECT": _Session.select, "UID": _Session.uid, "LOGOUT": _Session.logout, "NOOP": _Session.done,
}
