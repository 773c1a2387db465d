"""Helpers for the collector tests: a per-test environment on the shared mail stack, test messages."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from smartpop.config.schema import Config, parse_config
from smartpop.paths import Paths, ensure_data_dir
from support.mailstack import MailStack

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DOMAIN = "firma.de"
_counter = itertools.count(1)


class Env:
    """One test's users, data dir and config; user names are unique per test."""

    def __init__(self, stack: MailStack, tmp: Path) -> None:
        self.stack = stack
        self.tag = f"t{next(_counter)}x{os.getpid()}"
        self.data = Path(tempfile.mkdtemp(prefix="sp", dir="/tmp"))
        self.paths = Paths(self.data)
        ensure_data_dir(self.paths)
        self.catchall = self.addr("sammel", "provider.test")
        self.password = f"pw-{self.tag}-Secret!"
        self.fallback = self.addr("postmaster")

    def addr(self, name: str, domain: str = "firma.test") -> str:
        """A test-unique address."""
        return f"{name}.{self.tag}@{domain}"

    def users(self, *names: str) -> None:
        """Create the catch-all on the provider and local mailboxes for `names` (+ the fallback)."""
        pairs = [(self.catchall, self.password), (self.fallback, "x")]
        pairs += [(self.addr(n), "x") for n in names]
        self.stack.add_users(pairs)

    def account(self, **over: Any) -> Dict[str, Any]:
        """An account document pointing at the test provider."""
        doc: Dict[str, Any] = {
            "name": "sammel", "protocol": "pop3", "host": "localhost", "port": self.stack.pop3s_port,
            "security": "ssl", "username": self.catchall, "password": self.password,
            "ca_file": self.stack.ca_file, "mode": "multidrop", "keep_on_server": False,
        }
        if over.get("protocol") == "imap" and "port" not in over:
            doc["port"] = self.stack.imaps_port
        doc.update(over)
        return doc

    def write_config(self, accounts: Optional[List[Dict[str, Any]]] = None, **over: Any) -> Config:
        """Write config.json and return the parsed Config."""
        doc: Dict[str, Any] = {
            "schema_version": 1,
            "accounts": accounts if accounts is not None else [self.account()],
            "local_domains": ["firma.test"],
            "aliases": {},
            "fallback_recipient": self.fallback,
            "delivery": {"host": "127.0.0.1", "port": self.stack.smtp_port},
        }
        doc.update(over)
        path = self.paths.config
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        return parse_config(doc)

    def fill(self, messages: List[bytes], mailbox: Optional[str] = None) -> None:
        """Put messages on the provider."""
        self.stack.fill(mailbox or self.catchall, messages)

    def local(self, name: str, domain: str = "firma.test") -> List[bytes]:
        """Messages delivered to local mailbox `name` (after Postfix drained its queue)."""
        self.stack.drain()
        return self.stack.maildir(self.addr(name, domain) if "@" not in name else name)

    def left_on_provider(self, mailbox: Optional[str] = None) -> int:
        """Messages still on the provider."""
        return self.stack.provider_count(mailbox or self.catchall)

    def run_cli(self, *args: str, env: Optional[Dict[str, str]] = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `smartpop --data DIR ARGS` in a child process (the real CLI)."""
        return subprocess.run([sys.executable, "-m", "smartpop", "--data", str(self.data), *args],
                              capture_output=True, text=True, timeout=timeout, env=child_env(env))

    def cleanup(self) -> None:
        """Remove the data dir."""
        shutil.rmtree(self.data, ignore_errors=True)


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a child Python that imports smartpop and the test support code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "package"), str(ROOT / "tests")])
    env.pop("SMARTPOP_DATA", None)
    env.update(extra or {})
    return env


def message(n: int, to: str, *, extra: str = "", body: Optional[str] = None, msgid: Optional[str] = None) -> bytes:
    """A plain test message with envelope header `Delivered-To: to` unless `extra` says otherwise."""
    mid = msgid if msgid is not None else f"<m{n}.{os.urandom(4).hex()}@remote.test>"
    head = f"Return-Path: <sender{n}@remote.test>\n" + (f"Delivered-To: {to}\n" if to else "") + extra
    text = body if body is not None else f"Body of message {n}.\n.leading dot line\nlast line\n"
    return (f"{head}From: Sender {n} <sender{n}@remote.test>\nTo: {to or 'someone@remote.test'}\n"
            f"Subject: message {n}\nMessage-ID: {mid}\nDate: Sat, 28 Nov 2026 06:00:00 +0000\n\n{text}").encode()


def body_of(data: bytes) -> bytes:
    """The body of a stored message (after the first blank line), line ends normalised to LF."""
    data = data.replace(b"\r\n", b"\n")
    return data.split(b"\n\n", 1)[1] if b"\n\n" in data else b""


def assert_census(env: Env, expected: Dict[str, List[bytes]]) -> None:
    """Each local user holds exactly `expected`'s bodies (no loss, no duplicate), and the provider is empty."""
    for name, messages in expected.items():
        got = sorted(body_of(m) for m in env.local(name))
        assert got == sorted(body_of(m) for m in messages), f"{name}: {len(got)} messages, expected {len(messages)}"
    assert env.left_on_provider() == 0


REDELIVERED_MARK = b"X-SmartPop-Redelivered: possible duplicate"


def is_marked(data: bytes) -> bool:
    """True if a delivered message carries SmartPop's redelivery mark in its header."""
    return REDELIVERED_MARK in data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


def assert_census_after_doubt(env: Env, expected: Dict[str, List[bytes]]) -> int:
    """Nothing lost, nothing misrouted, every duplicate marked; returns the number of marked extra copies.

    After a crash, copies in doubt are delivered again with the redelivery mark: each expected
    body must be there at least once, at most once without the mark, and nothing else may be.
    """
    extra = 0
    for name, messages in expected.items():
        got = env.local(name)
        want = {body_of(m) for m in messages}
        bodies = [body_of(m) for m in got]
        assert set(bodies) == want, f"{name}: got {len(set(bodies))} distinct messages, expected {len(want)}"
        for body in want:
            plain = [m for m in got if body_of(m) == body and not is_marked(m)]
            assert len(plain) <= 1, f"{name}: an unmarked duplicate of {body[:40]!r}"
        extra += len(bodies) - len(want)
    assert env.left_on_provider() == 0
    return extra

