"""A MailPlus stand-in that relays outside mail to a recording sink: for the "nothing leaves" tests.

MailStack's Postfix refuses every outside destination (default_transport = error), so it
cannot show a leak. This instance is set up like MailPlus with a smart relay: it trusts
127.0.0.1 (mynetworks, where SmartPop connects from), delivers the company domain into
maildirs, and relays everything else to `relayhost`, here an aiosmtpd sink that records each
envelope ("the outside"). Two ways to own the company domain:

- `mode="mydestination"`: the domain is in mydestination (local address class), where
  Postfix's default allow_percent_hack and swap_bangpath rewrite "a%b@firma" and "b!a@firma"
  into "a@b" (and resolve_dequoted_address turns '"a@b"@firma' into "a@b"), then relays it;
- `mode="virtual"`: the domain is a virtual mailbox domain (what MailStack uses).

Local delivery is done by virtual(8) in both modes (local_transport = virtual), so no system
accounts are needed; unknown local users are refused at RCPT with 550.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from support.mailstack import _vmail, _wait_port
from support.ports import free_ports
from support.postfix_conf import start_postfix, stop_postfix, write_postfix_config


@dataclass
class Outside:
    """One message that reached the sink (it left the "NAS")."""

    mail_from: str
    rcpt_tos: List[str]
    data: bytes


class _SinkHandler:
    def __init__(self, owner: Sink) -> None:
        self.owner = owner

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content if envelope.original_content is not None else envelope.content
        assert isinstance(raw, bytes)
        with self.owner.lock:
            self.owner.messages.append(Outside(str(envelope.mail_from), list(envelope.rcpt_tos), raw))
        return "250 2.0.0 stored outside"


class Sink:
    """An SMTP server on 127.0.0.1 that accepts and records everything (the outside world)."""

    def __init__(self) -> None:
        self.messages: List[Outside] = []
        self.lock = threading.Lock()
        self.port = 0
        self._controller: Optional[Controller] = None

    def start(self) -> Sink:
        """Listen on a free loopback port (retrying if another test took it meanwhile)."""
        for attempt in range(5):
            port = free_ports(1)[0]
            controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=port, ready_timeout=10)
            try:
                controller.start()
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.1)
                continue
            self._controller, self.port = controller, port
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> List[Outside]:
        """What reached the outside so far."""
        with self.lock:
            return list(self.messages)


class OutboundPostfix:
    """A running Postfix that delivers `domain` locally and relays the rest to a sink; see the module docstring."""

    def __init__(self, root: Path, mode: str, domain: str, relay_port: int) -> None:
        if mode not in ("mydestination", "virtual"):
            raise ValueError(mode)
        self.root = root
        self.mode = mode
        self.domain = domain
        self.relay_port = relay_port
        self.etc = root / "etc"
        self.smtp_port = free_ports(1)[0]
        vmail = _vmail()
        self.uid, self.gid = vmail.pw_uid, vmail.pw_gid
        self.users: List[str] = []

    @classmethod
    def start(cls, mode: str, domain: str, relay_port: int, users: Sequence[str]) -> OutboundPostfix:
        """Create the instance under a short /tmp dir with local mailboxes `users` and start it."""
        for attempt in range(3):
            root = Path(tempfile.mkdtemp(prefix="po", dir="/tmp"))
            os.chmod(root, 0o755)
            instance = cls(root, mode, domain, relay_port)
            try:
                instance._start(users)
                return instance
            except RuntimeError:
                instance.stop()
                if attempt == 2:
                    raise
            except BaseException:
                instance.stop()
                raise
        raise AssertionError("unreachable")

    def _start(self, users: Sequence[str]) -> None:
        local = self.root / "local"
        local.mkdir()
        os.chown(local, self.uid, self.gid)
        self.users = [u.lower() for u in users]
        bind = f"127.0.0.1:{self.smtp_port} inet n  -       n       -       -       smtpd"
        if self.mode == "mydestination":
            owner = f"""\
mydestination = {self.domain}, localhost
local_transport = virtual
local_recipient_maps = texthash:{self.etc}/vmailbox
virtual_mailbox_domains =
"""
        else:
            owner = f"""\
mydestination = localhost
virtual_mailbox_domains = {self.domain}
"""
        write_postfix_config(self.root, bind, f"""\
myhostname = mailplus.{self.domain}
mydomain = {self.domain}
myorigin = $mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = none
{owner}virtual_mailbox_base = {local}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
virtual_minimum_uid = 100
relayhost = [127.0.0.1]:{self.relay_port}
""", comment="MailPlus stand-in with a smart relay; the relay host is the recording sink")
        (self.etc / "vmailbox").write_text(
            "".join(f"{a} {a.split('@')[1]}/{a.split('@')[0]}/Maildir/\n" for a in self.users))
        start_postfix(self.etc)
        _wait_port(self.smtp_port)
        self._wait_accepts()

    def _wait_accepts(self, timeout: float = 30.0) -> None:
        """Probe until smtpd answers RCPT for the first user (readiness, not a pass/fail timing)."""
        deadline = time.monotonic() + timeout
        while self.users:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
                smtp.ehlo("probe.test")
                smtp.mail("")
                code = smtp.rcpt(self.users[0])[0]
                smtp.rset()
            if code == 250:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix refuses {self.users[0]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop Postfix and remove the directory."""
        stop_postfix(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def queue_empty(self) -> bool:
        """True when Postfix holds no message in any queue."""
        queue = self.root / "queue"
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            directory = queue / sub
            if directory.is_dir() and any(p.is_file() for p in directory.rglob("*")):
                return False
        return True

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every queued message was delivered, relayed or given up (queue drain only)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.queue_empty():
            time.sleep(0.05)

    def maildir(self, address: str) -> List[bytes]:
        """Messages delivered locally to `address`, oldest first (Postfix writes LF line ends)."""
        local, domain = address.lower().split("@")
        maildir = self.root / "local" / domain / local / "Maildir"
        files = [p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()]
        return [p.read_bytes() for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    def log(self) -> str:
        """The instance's log text."""
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""
