"""Fault-injecting TCP proxies for the collector tests.

- `TcpProxy` sits between the collector and Dovecot (TLS passes through untouched) and can
  cut a connection after N bytes from the server, i.e. in the middle of a message.
- `SmtpFaultProxy` sits between the collector and Postfix and speaks just enough SMTP to
  answer a chosen command with 421/451/452/550/552 instead of Postfix, or to drop the
  connection in the middle of the DATA body. A faked DATA-end reply never lets Postfix
  queue the message: the upstream connection is dropped before the dot, then re-opened.

Both listen on 127.0.0.1 (or a given loopback address) on a free port, one thread per
connection; stop() closes everything.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple


def _listen(host: str) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen(16)
    return server


class _Base:
    def __init__(self, target_port: int, listen_host: str = "127.0.0.1", target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._server = _listen(listen_host)
        self.host = listen_host
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> _Base:
        """Start accepting."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection."""
        self._stop.set()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            threading.Thread(target=self._serve, args=(self._track(client), index), daemon=True).start()

    def _serve(self, client: socket.socket, index: int) -> None:
        raise NotImplementedError


class TcpProxy(_Base):
    """Byte-for-byte proxy; `cut(conn_index, after_bytes)` drops that connection mid-stream."""

    def __init__(self, target_port: int, listen_host: str = "127.0.0.1", idle_timeout: Optional[float] = 30) -> None:
        super().__init__(target_port, listen_host)
        # A server silent this long ends the connection (None: never, for sessions in IMAP IDLE).
        self.idle_timeout = idle_timeout
        self._cuts: dict = {}  # type: ignore[type-arg]
        self.cut_done = threading.Event()

    def cut(self, conn_index: int, after_bytes: int) -> None:
        """Close connection number `conn_index` (0-based) after `after_bytes` bytes from the server."""
        self._cuts[conn_index] = after_bytes

    def _serve(self, client: socket.socket, index: int) -> None:
        try:
            upstream = self._track(socket.create_connection(self.target, timeout=30))
            upstream.settimeout(self.idle_timeout)
        except OSError:
            client.close()
            return
        limit = self._cuts.get(index)

        def pump(src: socket.socket, dst: socket.socket, budget: Optional[int]) -> None:
            sent = 0
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if budget is not None and sent + len(data) >= budget:
                        dst.sendall(data[:max(0, budget - sent)])
                        self.cut_done.set()
                        break
                    dst.sendall(data)
                    sent += len(data)
            except OSError:
                pass
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

        threading.Thread(target=pump, args=(client, upstream, None), daemon=True).start()
        pump(upstream, client, limit)


@dataclass
class Rule:
    """One SMTP fault: at `stage`, for commands containing `match`, answer `reply` (`times` times).

    For DATA, DATA_END and BODY_DROP, `match` is looked up in the transaction's MAIL FROM line,
    so a rule can aim at one message by its sender. `sender`, if set, must also be in that
    line at any stage: a RCPT rule then hits one recipient of one message, whichever of the
    collector's parallel connections carries which message first.

    stage: "greeting", "MAIL", "RCPT", "DATA" (the DATA command), "DATA_END" (the dot),
    or "BODY_DROP" (drop both connections after `after_bytes` body bytes).
    """

    stage: str
    reply: str = ""
    match: str = ""
    times: int = 1
    close: bool = False
    after_bytes: int = 0
    sender: str = ""
    # DATA_END only: a power cut at the dot. Postfix never gets the dot (it discards the
    # message) and the collector never gets a reply; the client connection hangs open.
    swallow: bool = False


class SmtpFaultProxy(_Base):
    """SMTP-aware proxy, one command at a time (pipelined commands are answered in order).

    The collector may hold several connections at once: the transaction state (MAIL FROM)
    is kept per connection, so a rule aimed at one sender fires on that message only.
    """

    def __init__(self, target_port: int, rules: Optional[List[Rule]] = None, hide: Tuple[str, ...] = ()) -> None:
        super().__init__(target_port)
        self.rules: List[Rule] = list(rules or [])
        self.fired: List[Tuple[str, str]] = []
        self.hide = tuple(h.upper() for h in hide)  # EHLO keywords not to pass on (e.g. PIPELINING)

    def _ehlo_reply(self, reply: bytes) -> bytes:
        """The EHLO reply without the hidden extensions."""
        if not self.hide:
            return reply
        lines = [line for line in reply.splitlines() if not line[4:].decode("ascii", "replace").upper()
                 .startswith(self.hide)]
        return b"".join(line[:3] + (b"-" if i < len(lines) - 1 else b" ") + line[4:] + b"\r\n"
                        for i, line in enumerate(lines))

    def _take(self, stage: str, line: str, mail: str = "") -> Optional[Rule]:
        with self._lock:
            for rule in self.rules:
                if (rule.stage == stage and rule.times > 0 and rule.match.lower() in line.lower()
                        and rule.sender.lower() in mail.lower()):
                    rule.times -= 1
                    self.fired.append((stage, rule.reply or f"drop after {rule.after_bytes}"))
                    return rule
        return None

    def _serve(self, client: socket.socket, index: int) -> None:
        cfile = client.makefile("rb")
        try:
            self._session(client, cfile)
        except (OSError, ValueError):
            pass
        finally:
            client.close()

    def _connect(self) -> Tuple[socket.socket, object]:
        upstream = self._track(socket.create_connection(self.target, timeout=60))
        return upstream, upstream.makefile("rb")

    @staticmethod
    def _reply(ufile: object) -> bytes:
        out = b""
        while True:
            line = ufile.readline()  # type: ignore[attr-defined]
            if not line:
                raise OSError("upstream closed")
            out += line
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def _session(self, client: socket.socket, cfile: object) -> None:
        upstream, ufile = self._connect()
        greeting = self._reply(ufile)
        rule = self._take("greeting", "")
        if rule:
            client.sendall(rule.reply.encode() + b"\r\n")
            upstream.close()
            return
        client.sendall(greeting)
        ehlo_line = b""
        mail = ""
        while True:
            line = cfile.readline()  # type: ignore[attr-defined]
            if not line:
                upstream.close()
                return
            text = line.decode("utf-8", "replace").strip()
            verb = text.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                ehlo_line = line
            if verb == "MAIL":
                mail = text
            stage = {"MAIL": "MAIL", "RCPT": "RCPT", "DATA": "DATA"}.get(verb)
            rule = self._take(stage, mail if verb == "DATA" else text, mail) if stage else None
            if rule:
                client.sendall(rule.reply.encode() + b"\r\n")
                if rule.close or rule.reply.startswith("421"):
                    upstream.close()
                    return
                continue
            upstream.sendall(line)
            reply = self._reply(ufile)
            client.sendall(self._ehlo_reply(reply) if verb == "EHLO" else reply)
            if verb == "QUIT":
                upstream.close()
                return
            if verb == "DATA" and reply.startswith(b"354"):
                upstream, ufile = self._body(client, cfile, upstream, ufile, ehlo_line, mail)
                if upstream is None:
                    return

    def _body(self, client: socket.socket, cfile: object, upstream: socket.socket, ufile: object,
              ehlo_line: bytes, mail: str) -> Tuple[Optional[socket.socket], object]:
        drop = self._take("BODY_DROP", mail, mail)
        count = 0
        while True:
            line = cfile.readline()  # type: ignore[attr-defined]
            if not line:
                upstream.close()
                return None, None
            if line == b".\r\n":
                rule = self._take("DATA_END", mail, mail)
                if rule is None:
                    upstream.sendall(line)
                    client.sendall(self._reply(ufile))
                    return upstream, ufile
                # Never let Postfix queue a message we claim was refused: drop it mid-DATA.
                upstream.close()
                if rule.swallow:
                    while cfile.readline():  # type: ignore[attr-defined]
                        pass  # until the collector is killed (or gives up)
                    return None, None
                if rule.reply:  # an empty reply with close: the connection breaks after the dot
                    client.sendall(rule.reply.encode() + b"\r\n")
                if rule.close or rule.reply.startswith("421"):
                    return None, None
                upstream, ufile = self._connect()
                self._reply(ufile)
                if ehlo_line:
                    upstream.sendall(ehlo_line)
                    self._reply(ufile)
                return upstream, ufile
            count += len(line)
            if drop is not None and count >= drop.after_bytes:
                upstream.close()
                client.close()
                return None, None
            upstream.sendall(line)
