"""A minimal IMAP server on loopback that behaves like Courier about UTF-8 (RFC 6855).

It offers ENABLE and UTF8=ACCEPT; until a client sends `ENABLE UTF8=ACCEPT`, a message with
8-bit bytes in its header is served as a "Cannot display Unicode content" wrapper (as
fakepop3.courier_wrapper). Only what SmartPop's ImapSource uses is implemented: LOGIN,
CAPABILITY, ENABLE, SELECT, UID FETCH (UID, RFC822.SIZE, BODY.PEEK[]<o.n>), UID STORE,
UID EXPUNGE, LOGOUT. Plain TCP (security "none"), one thread per connection.
"""

from __future__ import annotations

import re
import socket
import threading
from typing import Dict, List, Sequence, Set

from support.fakepop3 import _header_is_8bit, courier_wrapper

_PARTIAL = re.compile(r"BODY\.PEEK\[\]<(\d+)\.(\d+)>")


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
                 password: str = "secret-pw") -> None:
        self.messages: Dict[int, bytes] = {i: m for i, m in enumerate(messages, 1)}
        self.user, self.password = user, password
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
        utf8 = False
        served: Dict[int, bytes] = {}  # what this session shows for each uid (the wrapper is made once)
        flagged: Set[int] = set()
        caps = "IMAP4rev1 ENABLE UTF8=ACCEPT UIDPLUS"

        def send(text: str) -> None:
            conn.sendall(text.encode("utf-8") + b"\r\n")

        def view(uid: int) -> bytes:
            if uid not in served:
                data = self.messages[uid].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                served[uid] = data if utf8 or not _header_is_8bit(data) else courier_wrapper(data)
            return served[uid]

        try:
            send(f"* OK [CAPABILITY {caps}] fake IMAP ready")
            while True:
                raw = reader.readline()
                if not raw:
                    return
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                tag, _, rest = line.partition(" ")
                verb, _, args = rest.partition(" ")
                verb = verb.upper()
                with self._lock:
                    self.commands.append(f"{verb} ***" if verb == "LOGIN" else rest)
                if verb == "CAPABILITY":
                    send(f"* CAPABILITY {caps}")
                elif verb == "LOGIN":
                    user, _, password = args.partition(" ")
                    if user.strip('"') != self.user or password.strip('"') != self.password:
                        send(f"{tag} NO [AUTHENTICATIONFAILED] wrong")
                        continue
                elif verb == "ENABLE":
                    if "UTF8=ACCEPT" in args.upper():
                        utf8 = True
                        send("* ENABLED UTF8=ACCEPT")
                elif verb == "SELECT":
                    send(f"* {len(self.messages)} EXISTS")
                    send("* OK [UIDVALIDITY 7] ok")
                    send(f"{tag} OK [READ-WRITE] selected")
                    continue
                elif verb == "UID":
                    self._uid(tag, args, send, view, flagged, conn)
                    continue
                elif verb == "LOGOUT":
                    send("* BYE")
                    send(f"{tag} OK bye")
                    return
                elif verb not in ("NOOP",):
                    send(f"{tag} BAD unknown")
                    continue
                send(f"{tag} OK done")
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


