"""A private Postfix (the MailPlus stand-in) for the relay tests, and the real `smartpop relay` CLI.

The instance has its own config dir (ROOT/etc, the dir `relay apply --postfix-dir` patches),
queue and data dirs, and two smtpd services on 127.0.0.1:
- `smtp_port`: like MailPlus's port 25, no client is trusted (mynetworks is empty), so it
  accepts mail for its own domain only; an open-relay probe goes here;
- `submit_port`: stands in for MailPlus's authenticated submission; it trusts loopback
  clients (per-service mynetworks), so a test can hand it outgoing mail without SASL.
Nothing is delivered locally; outgoing mail goes through whatever relay `apply` configured.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from support.mailstack import _wait_port
from support.ports import free_ports
from support.postfix_conf import start_postfix, stop_postfix, write_postfix_config

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "package"


def have_postfix() -> bool:
    """True when this machine can run a private Postfix (root, postfix installed)."""
    return os.geteuid() == 0 and all(shutil.which(b) for b in ("postfix", "postconf", "postmap", "postqueue"))


def tree_digest(root: Path) -> Dict[str, str]:
    """sha256 (and mode) of every file under `root`, keyed by relative path; symlinks by target."""
    result: Dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            result[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            mode = path.stat().st_mode & 0o7777
            result[rel] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {mode:o}"
        elif path.is_dir():
            result[rel] = "dir"
    return result


def config_digest(postfix_dir: Path) -> Dict[str, str]:
    """tree_digest of everything a relay command may touch: the Postfix, maps and customize dirs."""
    result: Dict[str, str] = {}
    for area, directory in (("etc", postfix_dir), ("maps", maps_dir_for(postfix_dir)),
                            ("customize", customize_dir_for(postfix_dir))):
        if directory.is_dir():
            result[area] = "dir"
            result.update({f"{area}/{rel}": value for rel, value in tree_digest(directory).items()})
    return result


class RelayPostfix:
    """One running Postfix instance; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"
        self.smtp_port, self.submit_port = free_ports(2)

    @classmethod
    def start(cls) -> RelayPostfix:
        """Create the instance under a short /tmp dir and start it (fresh ports on a bind race)."""
        for attempt in range(3):
            root = Path(tempfile.mkdtemp(prefix="pr", dir="/tmp"))
            os.chmod(root, 0o755)
            instance = cls(root)
            try:
                instance._start()
                return instance
            except RuntimeError:
                instance.stop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self) -> None:
        bind = (f"127.0.0.1:{self.smtp_port} inet n  -       n       -       -       smtpd\n"
                f"127.0.0.1:{self.submit_port} inet n  -       n       -       -       smtpd\n"
                "  -o mynetworks=127.0.0.0/8\n"
                "  -o smtpd_relay_restrictions=permit_mynetworks,reject\n"
                "  -o smtpd_recipient_restrictions=permit_mynetworks,reject")
        # MailPlus-like: comments, a parameter defined twice, an existing (empty) relayhost.
        write_postfix_config(self.root, bind, """\
myhostname = mailplus.firma.test
mydomain = firma.test
myorigin = $mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# nobody is trusted on the public port: only mail for our own domain is accepted there
mynetworks =
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
relay_domains =
relayhost =
smtp_tls_loglevel = 1
relayhost =
""", comment="MailPlus stand-in for the SmartPop relay tests")
        start_postfix(self.etc)
        _wait_port(self.smtp_port)
        _wait_port(self.submit_port)

    def stop(self) -> None:
        """Stop Postfix and remove the directory."""
        stop_postfix(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- mail ---------------------------------------------------------------------------
    def submit(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        """Hand outgoing mail to the submission service (raises if Postfix refuses it)."""
        with smtplib.SMTP("127.0.0.1", self.submit_port, timeout=30) as smtp:
            smtp.sendmail(sender, list(recipients), message)

    def queue(self) -> List[Dict[str, object]]:
        """The queue as `postqueue -c DIR -j` reports it (one dict per message)."""
        out = subprocess.run(["postqueue", "-c", str(self.etc), "-j"], capture_output=True, text=True,
                             check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_listing(self) -> str:
        """`postqueue -c DIR -p` (what mailq shows)."""
        return subprocess.run(["postqueue", "-c", str(self.etc), "-p"], capture_output=True, text=True).stdout

    def flush(self) -> None:
        """Ask Postfix to retry the deferred mail now."""
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], capture_output=True, check=True)

    def wait_queue(self, count: int, status: Optional[str] = None,
                   timeout: float = 30.0) -> List[Dict[str, object]]:
        """Wait until the queue holds exactly `count` messages (all in queue `status`, if given)."""
        deadline = time.monotonic() + timeout
        entries = self.queue()
        while time.monotonic() < deadline:
            entries = self.queue()
            matching = [e for e in entries if status is None or e.get("queue_name") == status]
            if len(matching) == count and len(entries) == count:
                return entries
            time.sleep(0.1)
        return entries

    def log(self) -> str:
        """The instance's log text."""
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def postconf_n(self) -> Dict[str, str]:
        """`postconf -c DIR -n` as a dict."""
        out = subprocess.run(["postconf", "-c", str(self.etc), "-n"], capture_output=True, text=True,
                             check=True).stdout
        result = {}
        for line in out.splitlines():
            name, _, value = line.partition(" = ")
            result[name.strip().rstrip(" =")] = value.strip()
        return result


def write_config(data_dir: Path, relay: Dict[str, object]) -> None:
    """A config.json with `relay` as its relay section (mode 0600, like the package writes it)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"schema_version": 1, "accounts": [], "local_domains": ["firma.test"],
           "fallback_recipient": "postmaster@firma.test",
           "relay": relay}
    path = data_dir / "config.json"
    path.write_text(json.dumps(doc, indent=1))
    path.chmod(0o600)


def smartpop_env(ca_file: Optional[Path] = None) -> Dict[str, str]:
    """Environment for running the package's CLI from the source tree."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(PACKAGE),
           "LANG": "C.UTF-8"}
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)  # how the admin points the root task at a CA bundle
    return env


def maps_dir_for(postfix_dir: Path) -> Path:
    """The test's stand-in for MailPlus's etc/smartpop: next to the Postfix dir, outside it."""
    return postfix_dir.parent / "smartpop-maps"


def customize_dir_for(postfix_dir: Path) -> Path:
    """The test's stand-in for MailPlus's etc/customize/postfix (absent unless a test creates it)."""
    return postfix_dir.parent / "customize" / "postfix"


def relay_argv(data_dir: Path, action: str, postfix_dir: Path, *extra: str) -> List[str]:
    """argv of the verified root command (README/Relay page) for `relay ACTION --postfix-dir DIR ...`.

    Unless `extra` names them, --maps-dir and --customize-dir point next to the Postfix dir, so a
    test never touches the machine's /var/packages."""
    from support.relay_bundle import root_task_argv

    dirs = ["--postfix-dir", str(postfix_dir)]
    if "--maps-dir" not in extra:
        dirs += ["--maps-dir", str(maps_dir_for(postfix_dir))]
    if "--customize-dir" not in extra:
        dirs += ["--customize-dir", str(customize_dir_for(postfix_dir))]
    return root_task_argv(data_dir, action, *dirs, *extra)


def run_relay(data_dir: Path, action: str, postfix_dir: Path, *extra: str, ca_file: Optional[Path] = None,
              timeout: float = 120.0) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Run the real CLI (as the root task would) and return its completed process (text)."""
    return subprocess.run(relay_argv(data_dir, action, postfix_dir, *extra), capture_output=True, text=True,
                          env=smartpop_env(ca_file), timeout=timeout, cwd=str(data_dir.parent))


def mailplus_like_dir(etc: Path) -> Path:
    """A Postfix config dir at `etc` like MailPlus's: its main.cf fixture and the system's master.cf."""
    etc.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "data" / "maincf" / "mailplus.cf", etc / "main.cf")
    shutil.copy("/etc/postfix/master.cf", etc / "master.cf")
    return etc
