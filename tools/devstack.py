"""A tiny local provider and MailPlus for trying SmartPop: a POP3 server and an SMTP sink.

    python3 tools/devstack.py [--dir DIR] [--target TARGET]

Standard library only, loopback only, free ports. It creates DIR (default: a new temp dir) with
  provider/   the POP3 mailbox: three sample messages (one for anna, one for ben, one that only the
              fallback mailbox can take); a message is removed when SmartPop deletes it
  delivered/  what the SMTP sink received, one directory per recipient
  data/       SmartPop's data dir with a config.json that points at both servers
prints the `smartpop fetch` command for a second terminal, and serves until Ctrl-C (or SIGTERM).
Not shipped; not a test fixture (tests/support has the real Dovecot and Postfix).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Dict, List, Optional, Set, Tuple

HOST = "127.0.0.1"
DOMAIN = "firma.de"
SAMPLES = {
    "0001-anna.eml": ("Delivered-To: anna@firma.de", "anna@firma.de", "Hello Anna"),
    "0002-ben.eml": ("Delivered-To: ben@firma.de", "ben@firma.de", "Hello Ben"),
    "0003-stranger.eml": ("Delivered-To: someone@elsewhere.example", "someone@elsewhere.example",
                          "For the fallback mailbox"),
}


def sample(envelope: str, to: str, subject: str, number: int) -> bytes:
    """One provider-side message: the provider's envelope header above its Received line."""
    return (f"{envelope}\r\nReceived: from mx.remote.example by pop.provider.example with ESMTP for <{to}>;"
            f" Mon, 30 Nov 2026 08:00:0{number} +0000\r\nReturn-Path: <sender@remote.example>\r\n"
            f"From: Sender <sender@remote.example>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 30 Nov 2026 08:00:0{number} +0000\r\nMessage-ID: <devstack-{number}@remote.example>\r\n"
            f"\r\nThis message came from the devstack's POP3 server.\r\n").encode("ascii")


class Pop3Handler(socketserver.StreamRequestHandler):
    """RFC 1939 with USER/PASS, UIDL, TOP and CAPA; deletions happen at QUIT (UPDATE state)."""

    server: Pop3Server

    def send(self, line: str) -> None:
        self.wfile.write(line.encode("utf-8") + b"\r\n")

    def multiline(self, data: bytes) -> None:
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
        self.wfile.write(body + b".\r\n")

    def handle(self) -> None:
        self.send("+OK devstack POP3 ready")
        user, authed = "", False
        deleted: Set[int] = set()
        messages: List[Path] = []
        while True:
            raw = self.rfile.readline(1024)
            if not raw:
                return
            parts = raw.decode("utf-8", "replace").strip().split(" ", 2)
            verb, args = parts[0].upper(), parts[1:]
            if verb == "QUIT":
                self.quit(messages, deleted)
                return
            if verb == "CAPA":
                self.send("+OK capabilities follow")
                self.multiline(b"USER\nUIDL\nTOP\n")
            elif verb == "USER" and args:
                user = args[0]
                self.send("+OK send PASS")
            elif verb == "PASS" and not authed:
                authed, messages = self.login(user, " ".join(args))
            elif not authed:
                self.send("-ERR log in first")
            elif verb in ("STAT", "LIST", "UIDL", "RETR", "TOP", "DELE"):
                self.transaction(verb, args, messages, deleted)
            elif verb == "NOOP":
                self.send("+OK")
            elif verb == "RSET":
                deleted.clear()
                self.send("+OK")
            else:
                self.send("-ERR unknown command")

    def quit(self, messages: List[Path], deleted: Set[int]) -> None:
        """QUIT: remove the messages marked deleted, then say goodbye."""
        with self.server.lock:
            for index in deleted:
                messages[index].unlink(missing_ok=True)
        self.send("+OK bye")

    def login(self, user: str, password: str) -> Tuple[bool, List[Path]]:
        """PASS: (logged in, the maildrop's messages) when the credentials match."""
        if user == self.server.username and password == self.server.password:
            with self.server.lock:
                messages = sorted(self.server.maildrop.glob("*.eml"))
            self.send(f"+OK {len(messages)} messages")
            return True, messages
        self.send("-ERR wrong user name or password")
        return False, []

    def transaction(self, verb: str, args: List[str], messages: List[Path], deleted: Set[int]) -> None:
        live = [i for i in range(len(messages)) if i not in deleted]
        if verb == "STAT":
            self.send(f"+OK {len(live)} {sum(messages[i].stat().st_size for i in live)}")
            return
        if not args:
            if verb not in ("LIST", "UIDL"):
                self.send("-ERR which message?")
                return
            self.send("+OK")
            lines = [f"{i + 1} {messages[i].stat().st_size if verb == 'LIST' else messages[i].stem}" for i in live]
            self.multiline("\n".join(lines).encode("ascii") + b"\n" if lines else b"")
            return
        index = int(args[0]) - 1 if args[0].isdigit() else -1
        if index not in live:
            self.send("-ERR no such message")
            return
        path = messages[index]
        if verb == "LIST":
            self.send(f"+OK {index + 1} {path.stat().st_size}")
        elif verb == "UIDL":
            self.send(f"+OK {index + 1} {path.stem}")
        elif verb == "DELE":
            deleted.add(index)
            self.send("+OK marked")
        else:
            data = path.read_bytes()
            if verb == "TOP":
                head, _, body = data.partition(b"\r\n\r\n")
                count = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
                data = head + b"\r\n\r\n" + b"\r\n".join(body.split(b"\r\n")[:count])
            self.send("+OK message follows")
            self.multiline(data)


class Pop3Server(socketserver.ThreadingTCPServer):
    """The provider's mailbox: every *.eml in `maildrop`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, maildrop: Path, username: str, password: str) -> None:
        super().__init__((HOST, 0), Pop3Handler)
        self.maildrop, self.username, self.password = maildrop, username, password
        self.lock = threading.Lock()


_ADDRESS = re.compile(r"<([^<>]*)>")


class SmtpHandler(socketserver.StreamRequestHandler):
    """Enough ESMTP for SmartPop's hand-over: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    server: SmtpSink

    def send(self, line: str) -> None:
        self.wfile.write(line.encode("utf-8") + b"\r\n")

    def handle(self) -> None:
        self.send("220 devstack ESMTP sink")
        sender: Optional[str] = None
        recipients: List[str] = []
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").strip()
            verb = line[:4].upper()
            found = _ADDRESS.search(line)
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250-devstack\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n" if verb == "EHLO"
                                 else b"250 devstack\r\n")
            elif verb == "MAIL" and found is not None:
                sender, recipients = found.group(1), []
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT" and found is not None and sender is not None:
                recipients.append(found.group(1).lower())
                self.send("250 2.1.5 Ok")
            elif verb == "DATA" and recipients:
                self.send("354 End data with <CR><LF>.<CR><LF>")
                data = self.read_data()
                queue_id = self.server.store(sender or "", recipients, data)
                self.send(f"250 2.0.0 Ok: queued as {queue_id}")
                sender, recipients = None, []
            elif verb == "RSET":
                sender, recipients = None, []
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("503 5.5.1 Error: bad sequence or unknown command")

    def read_data(self) -> bytes:
        lines: List[bytes] = []
        while True:
            line = self.rfile.readline()
            if not line or line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)


class SmtpSink(socketserver.ThreadingTCPServer):
    """MailPlus's stand-in: writes each message to delivered/<recipient>/<queue id>.eml."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, outbox: Path) -> None:
        super().__init__((HOST, 0), SmtpHandler)
        self.outbox = outbox
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def store(self, sender: str, recipients: List[str], data: bytes) -> str:
        with self.lock:
            queue_id = f"{next(self.counter):06d}"
        for rcpt in recipients:
            folder = self.outbox / re.sub(r"[^A-Za-z0-9@._+-]", "_", rcpt)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{queue_id}.eml").write_bytes(f"X-Devstack-Envelope-From: <{sender}>\r\n".encode() + data)
        return queue_id


def config_document(pop3_port: int, smtp_port: int, web_port: int, password: str) -> Dict[str, Any]:
    """SmartPop's config.json for the devstack (plain POP3 on loopback needs allow_insecure)."""
    return {
        "schema_version": 1,
        "accounts": [{"name": "demo", "protocol": "pop3", "host": HOST, "port": pop3_port, "security": "none",
                      "allow_insecure": True, "username": f"sammel@{DOMAIN}", "password": password,
                      "mode": "multidrop", "keep_on_server": False}],
        "local_domains": [DOMAIN],
        "aliases": {},
        "fallback_recipient": f"postmaster@{DOMAIN}",
        "delivery": {"host": HOST, "port": smtp_port},
        "web": {"port": web_port},
    }


def free_port() -> int:
    """A loopback port that was free a moment ago (for `serve --dev`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def set_up(base: Path) -> Tuple[Path, Path, Path]:
    """Create provider/, delivered/ and data/ under `base`, with the sample messages."""
    provider, delivered, data = base / "provider", base / "delivered", base / "data"
    for directory in (provider, delivered, data):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for number, (name, (envelope, to, subject)) in enumerate(sorted(SAMPLES.items()), start=1):
        (provider / name).write_bytes(sample(envelope, to, subject, number))
    return provider, delivered, data


def _detach(base: Path) -> int:
    """Fork: the parent prints what the child reports once it listens, then exits; returns the child's pipe."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        chunks = []
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8")
        print(text, end="", flush=True)
        # Nothing reported: the child failed before it listened (its traceback is in devstack.log).
        os._exit(0 if text else 1)
    os.close(read_end)
    os.setsid()
    log = os.open(str(base / "devstack.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    return write_end


def main(argv: Optional[List[str]] = None) -> int:
    """Start both servers, write config.json, print what to run, serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to put everything (default: a new temp dir)")
    parser.add_argument("--target", default="TARGET", help="the unpacked package.tgz, for the printed commands")
    parser.add_argument("--background", action="store_true",
                        help="return once both servers listen; stop with: kill $(cat DIR/devstack.pid)")
    args = parser.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="smartpop-devstack-"))
    ready = _detach(base) if args.background else None
    provider, delivered, data = set_up(base)
    password = secrets.token_urlsafe(12)
    pop3 = Pop3Server(provider, f"sammel@{DOMAIN}", password)
    smtp = SmtpSink(delivered)
    config = data / "config.json"
    document = config_document(pop3.server_address[1], smtp.server_address[1], free_port(), password)
    config.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.chmod(config, 0o600)
    for server in (pop3, smtp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    smartpop = f"{args.target.rstrip('/')}/bin/smartpop --data {data}"
    banner = (f"devstack: POP3 (the provider) on {HOST}:{pop3.server_address[1]} with {len(SAMPLES)} messages, "
          f"SMTP sink (MailPlus) on {HOST}:{smtp.server_address[1]}\n"
          f"devstack: data dir {data} (config.json written)\n"
          f"devstack: delivered mail appears in {delivered}/<recipient>/\n"
          f"devstack: {'then' if ready is not None else 'in a second terminal'} run:\n"
          f"  {smartpop} fetch\n"
          f"  {smartpop} serve --dev      # the app in a browser\n"
          + (f"devstack: ready; stop it with: kill $(cat {base}/devstack.pid)" if ready is not None
             else "devstack: ready; Ctrl-C stops it"))
    if ready is None:
        print(banner, flush=True)
    else:
        (base / "devstack.pid").write_text(f"{os.getpid()}\n", encoding="ascii")
        os.write(ready, banner.encode("utf-8") + b"\n")
        os.close(ready)
    stopped = threading.Event()

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopped.wait(0.5):
        pass
    pop3.shutdown()
    smtp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
