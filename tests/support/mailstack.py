"""A private Dovecot (the provider) and Postfix (the MailPlus stand-in) on loopback.

Dovecot serves POP3/POP3S/IMAP/IMAPS for the
"provider" mailboxes; a second Postfix instance accepts SMTP and delivers into separate
virtual maildirs (the "local" mailboxes). The two stores never share a directory, so a
test can count what is left on the provider and what arrived locally independently.

Usage::

    stack = MailStack.start()                     # free ports, short temp dir under /tmp
    stack.add_user("sammel@firma.test", "pw")    # provider login + local mailbox
    stack.fill("sammel@firma.test", [raw_bytes, ...])
    ... run the collector against stack.pop3s_port / stack.smtp_port ...
    stack.maildir("anna@firma.test")             # list of delivered messages (bytes)
    stack.stop()

Needs root and the packages dovecot-core dovecot-pop3d dovecot-imapd postfix openssl.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from support.certs import make_certs
from support.ports import free_ports
from support.postfix_conf import start_postfix, stop_postfix, write_postfix_config


def have_mail_servers() -> bool:
    """True when this machine can run the stack (root, dovecot and postfix installed)."""
    return os.geteuid() == 0 and all(shutil.which(b) for b in ("dovecot", "postfix", "openssl"))


def _vmail() -> pwd.struct_passwd:
    """The unprivileged owner of all maildirs (Dovecot refuses uid 0)."""
    try:
        return pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "vmail"], check=True, capture_output=True)
        return pwd.getpwnam("vmail")


def _wait_port(port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 30.0) -> None:  # type: ignore[type-arg]
    """Block until 127.0.0.1:port accepts connections (start-up, not a pass/fail timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class MailStack:
    """A running Dovecot + Postfix pair; see the module docstring."""

    def __init__(self, root: Path, domains: Sequence[str], dovecot_extra: str = "",
                 oauth_introspection: str = "", oauth_scope: str = "") -> None:
        self.root = root
        self.domains = list(domains)
        self.dovecot_extra = dovecot_extra
        self.oauth_introspection = oauth_introspection
        self.oauth_scope = oauth_scope
        (self.pop3_port, self.pop3s_port, self.imap_port, self.imaps_port,
         self.smtp_port) = free_ports(5)
        self.certs = make_certs(root / "certs")
        self.ca_file = str(self.certs.ca_cert)
        self.host = "localhost"
        self.users: Dict[str, str] = {}
        self._dovecot: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        vmail = _vmail()
        self.uid, self.gid = vmail.pw_uid, vmail.pw_gid

    # --- life cycle ---------------------------------------------------------------------
    @classmethod
    def start(cls, domains: Iterable[str] = ("firma.test", "provider.test"), dovecot_extra: str = "",
              oauth_introspection: str = "", oauth_scope: str = "") -> MailStack:
        """Create a stack under a short /tmp dir (unix socket path limit) and start both servers.

        `dovecot_extra` is appended to dovecot.conf (e.g. to change the IMAP capabilities).
        `oauth_introspection` (an RFC 7662 address, e.g. of tests/support/oauthserver.py) makes
        Dovecot also accept XOAUTH2 and OAUTHBEARER logins checked there; `oauth_scope` then
        makes it refuse a token whose introspected scope lacks that scope.
        """
        for attempt in range(3):
            root = Path(tempfile.mkdtemp(prefix="ms", dir="/tmp"))
            os.chmod(root, 0o755)
            stack = cls(root, list(domains), dovecot_extra, oauth_introspection, oauth_scope)
            try:
                stack._start_dovecot()
                stack._start_postfix()
                return stack
            except RuntimeError:
                # Other test suites run servers concurrently: a port taken since free_ports()
                # looked makes a server fail to bind. Try again with fresh ports.
                stack.stop()
                if attempt == 2:
                    raise
            except BaseException:
                stack.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop both servers and remove the directory."""
        if self._dovecot is not None and self._dovecot.poll() is None:
            self._dovecot.terminate()
            try:
                self._dovecot.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._dovecot.kill()
        stop_postfix(self.root / "postfix")
        shutil.rmtree(self.root, ignore_errors=True)

    def _start_dovecot(self) -> None:
        base = self.root / "dovecot"
        for sub in ("run", "state"):
            (base / sub).mkdir(parents=True)
        provider = self.root / "provider"
        provider.mkdir()
        os.chown(provider, self.uid, self.gid)
        (base / "users").write_text("")
        os.chmod(base / "users", 0o644)
        conf = base / "dovecot.conf"
        conf.write_text(f"""\
instance_name = smartpop-test-{self.pop3_port}
base_dir = {base}/run
state_dir = {base}/state
protocols = pop3 imap
listen = 127.0.0.1, ::1
log_path = {base}/dovecot.log
first_valid_uid = 100
first_valid_gid = 100
ssl = yes
ssl_cert = <{self.certs.server_cert}
ssl_key = <{self.certs.server_key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth_introspection else ""}
auth_failure_delay = 0
mail_max_userip_connections = 50
passdb {{
  driver = passwd-file
  # Only for passwords: a token sent as XOAUTH2 never meets the password file (and so can
  # never match a password), and a token sent as a password never meets the oauth2 passdb.
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {base}/users
}}
{self._oauth_passdb(base)}userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
  default_fields = uid={self.uid} gid={self.gid} home={provider}/%d/%n
}}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xv%08Xu
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
{self.dovecot_extra}
""")
        self._dovecot = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        for port in (self.pop3s_port, self.imaps_port):
            _wait_port(port, self._dovecot)

    def _oauth_passdb(self, base: Path) -> str:
        """The oauth2 passdb (and its settings file) when the stack accepts OAuth2 logins, else ""."""
        if not self.oauth_introspection:
            return ""
        conf = base / "dovecot-oauth2.conf.ext"
        scope = f"scope = {self.oauth_scope}\n" if self.oauth_scope else ""
        conf.write_text(f"""\
introspection_mode = post
introspection_url = {self.oauth_introspection}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
{scope}""")
        return f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {conf}
}}
"""

    def _start_postfix(self) -> None:
        base = self.root / "postfix"
        local = self.root / "local"
        local.mkdir()
        os.chown(local, self.uid, self.gid)
        bind = (f"127.0.0.1:{self.smtp_port} inet n  -       n       -       -       smtpd\n"
                f"[::1]:{self.smtp_port} inet n      -       n       -       -       smtpd")
        etc = write_postfix_config(base, bind, f"""\
myhostname = mailplus.firma.test
mydomain = firma.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1, [::1]
inet_protocols = all
mynetworks = 127.0.0.0/8, [::1]/128
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
message_size_limit = 104857600
mailbox_size_limit = 0
virtual_mailbox_limit = 0
virtual_mailbox_domains = {", ".join(self.domains)}
virtual_mailbox_base = {local}
virtual_mailbox_maps = texthash:{base}/etc/vmailbox
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
virtual_minimum_uid = 100
# nothing ever leaves this machine: mail for other domains is refused, not relayed
relayhost =
default_transport = error:no outside delivery in tests
""")
        (etc / "vmailbox").write_text("")
        start_postfix(etc)
        _wait_port(self.smtp_port)

    # --- users and mail -------------------------------------------------------------------
    def add_user(self, address: str, password: str = "") -> None:
        """Create a provider mailbox (login `address`/`password`) and a local mailbox for `address`."""
        address = address.lower()
        self.add_users([(address, password or address.split("@")[0] + "-pw")])

    def add_users(self, pairs: Sequence[tuple]) -> None:  # type: ignore[type-arg]
        """Add several (address, password) users with one Postfix reload."""
        for address, password in pairs:
            self.users[address.lower()] = password
        users = self.root / "dovecot/users"
        users.write_text("".join(f"{a}:{{PLAIN}}{p}::::::\n" for a, p in self.users.items()))
        vmailbox = self.root / "postfix/etc/vmailbox"
        vmailbox.write_text("".join(f"{a} {a.split('@')[1]}/{a.split('@')[0]}/Maildir/\n" for a in self.users))
        subprocess.run(["postfix", "-c", str(self.root / "postfix/etc"), "reload"], check=True, capture_output=True)
        self._wait_accepts([address.lower() for address, _ in pairs])

    def _wait_accepts(self, addresses: List[str], timeout: float = 30.0) -> None:
        """After a reload, probe until smtpd knows every address (readiness, not a pass/fail timing).

        The addresses share one transaction per connection. Each aborted transaction keeps one
        of Postfix's flow-control tokens (nothing is delivered that would give it back), and
        once ~100 are gone every new queue file waits in_flow_delay (1 s): probing 400
        addresses one transaction each took ~7 minutes in the accounts bench.
        """
        deadline = time.monotonic() + timeout
        waiting = list(dict.fromkeys(addresses))
        while waiting:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
                smtp.ehlo("probe.test")
                smtp.mail("")
                known = 0
                # At most 500 (smtpd_recipient_limit is 1000), and stop at the first refusal:
                # this smtpd still has the old table, and ~20 refusals make it hang up.
                for address in waiting[:500]:
                    if smtp.rcpt(address)[0] != 250:
                        break
                    known += 1
                smtp.rset()
            waiting = waiting[known:]
            if waiting and not known:  # the reload has not reached this smtpd yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postfix still refuses {', '.join(waiting[:5])} after reload")
                time.sleep(0.1)

    def provider_maildir(self, address: str) -> Path:
        """The provider's Maildir of `address` (Dovecot's store)."""
        local, domain = address.lower().split("@")
        return self.root / "provider" / domain / local / "Maildir"

    def local_maildir(self, address: str) -> Path:
        """The local (MailPlus stand-in) Maildir of `address`."""
        local, domain = address.lower().split("@")
        return self.root / "local" / domain / local / "Maildir"

    def fill(self, address: str, messages: Sequence[bytes]) -> List[str]:
        """Put `messages` into the provider mailbox of `address` (files written directly, LF as stored)."""
        maildir = self.provider_maildir(address)
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        names = []
        stamp = int(time.time())
        for i, data in enumerate(messages):
            name = f"{stamp}.M{i}P{os.getpid()}R{os.urandom(4).hex()}.test"
            tmp = maildir / "tmp" / name
            tmp.write_bytes(data)
            # Owned by the mail user before Dovecot can see it: once in new/, an IDLE session may
            # move it to cur/ at any moment.
            os.chown(tmp, self.uid, self.gid)
            os.replace(tmp, maildir / "new" / name)
            names.append(name)
        node = maildir
        while node != self.root / "provider":
            for path in [node, *node.rglob("*")] if node == maildir else [node]:
                try:
                    os.chown(path, self.uid, self.gid)
                except FileNotFoundError:
                    pass  # a message Dovecot moved from new/ to cur/ meanwhile (already chowned above)
            node = node.parent
        return names

    def maildir(self, address: str) -> List[bytes]:
        """The messages delivered locally to `address`, oldest first (Postfix writes LF line ends)."""
        maildir = self.local_maildir(address)
        files = [p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()]
        return [p.read_bytes() for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    def wait_delivered(self, counts: Dict[str, int], timeout: float = 60.0) -> None:
        """Wait until Postfix's queue is empty and the maildirs hold at least `counts` (queue drain only)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(self.maildir(a)) >= n for a, n in counts.items()) and self.queue_empty():
                return
            time.sleep(0.05)

    def queue_empty(self) -> bool:
        """True when Postfix holds no message in any queue."""
        queue = self.root / "postfix/queue"
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            directory = queue / sub
            if directory.is_dir() and any(p.is_file() for p in directory.rglob("*")):
                return False
        return True

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until Postfix has moved every queued message into a maildir (or given up on it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.queue_empty():
            time.sleep(0.05)

    def provider_count(self, address: str) -> int:
        """How many messages the provider still holds for `address` (via POP3S, as a client sees it)."""
        return len(self.provider_messages(address))

    def provider_messages(self, address: str, protocol: str = "pop3") -> List[bytes]:
        """The provider's messages for `address` as POP3 RETR (or IMAP FETCH BODY[]) returns them."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if protocol == "imap":
            imap = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=ctx)
            try:
                imap.login(address.lower(), self.users[address.lower()])
                imap.select("INBOX", readonly=True)
                uids = imap.uid("SEARCH", "ALL")[1][0].split()
                return [imap.uid("FETCH", uid, "(BODY.PEEK[])")[1][0][1] for uid in uids]
            finally:
                imap.logout()
        pop = poplib.POP3_SSL("127.0.0.1", self.pop3s_port, context=ctx, timeout=30)
        try:
            pop.user(address.lower())
            pop.pass_(self.users[address.lower()])
            count, _ = pop.stat()
            old = poplib._MAXLINE  # type: ignore[attr-defined]
            poplib._MAXLINE = 1 << 24  # type: ignore[attr-defined]
            try:
                result = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
            finally:
                poplib._MAXLINE = old  # type: ignore[attr-defined]
            return result
        finally:
            pop.quit()

    def postfix_log(self) -> str:
        """The Postfix instance's log text."""
        path = self.root / "postfix/postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""
