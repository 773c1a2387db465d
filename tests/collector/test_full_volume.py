"""A full volume: DATA and MailPlus's queue share it (issue 12 §1).

MailPlus answers the dot with 451 because its queue file cannot be written; clearing the
'sending' note then fails too, because the same disk is full. Nothing may be deleted at the
provider, an alert must go out, and once space is free the message arrives (once, marked as a
possible duplicate because SmartPop's own record of that attempt could not be written).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from support.collect import Env, body_of, child_env, message
from support.ports import free_ports

pytestmark = pytest.mark.mailstack


class FullDiskTarget:
    """The MailPlus stand-in: while `full`, it fills DATA's volume and answers 451 at the dot."""

    def __init__(self, volume: Path) -> None:
        self.volume = volume
        self.full = True
        self.received: List[bytes] = []
        self.dot_replies: List[str] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=free_ports(1)[0])

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: List[str]) -> str:
        """Accept every recipient."""
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """451 with a full disk, else keep the message."""
        if self.full:
            self._fill()
            self.dot_replies.append("451")
            return "451 4.3.0 Error: queue file write error"
        assert isinstance(envelope.content, bytes)
        self.received.append(envelope.content)
        self.dot_replies.append("250")
        return "250 2.0.0 Ok: queued"

    def _fill(self) -> None:
        for size in (65536, 1):  # big pieces, then the last few bytes
            try:
                with open(self.volume / "filler", "ab", buffering=0) as handle:
                    while True:
                        handle.write(b"\0" * size)
            except OSError:
                pass

    def free(self) -> None:
        """Space is back, and MailPlus queues again."""
        (self.volume / "filler").unlink(missing_ok=True)
        self.full = False


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs that can really run full (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "vol"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_volume_at_the_dot_loses_nothing_and_alerts(env: Env, small_volume: Path, tmp_path: Path) -> None:
    env.users("anna")
    anna = env.addr("anna")
    original = message(1, anna, body="important contract\n" * 50)
    env.fill([original])
    data = small_volume / "data"
    data.mkdir(mode=0o700)
    target = FullDiskTarget(small_volume)
    target.controller.start()
    notified = tmp_path / "notify.log"
    stub = tmp_path / "synodsmnotify"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{notified}'\n")
    stub.chmod(0o755)
    try:
        env.write_config(delivery={"host": "127.0.0.1", "port": target.controller.port})
        (data / "config.json").write_bytes(env.paths.config.read_bytes())
        extra = {"SMARTPOP_SYNODSMNOTIFY": str(stub)}
        argv = [sys.executable, "-m", "smartpop", "--data", str(data), "fetch"]
        started = time.monotonic()
        first = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=child_env(extra))
        took = time.monotonic() - started
        assert target.dot_replies == ["451"], target.dot_replies
        assert first.returncode == 1, first.stdout + first.stderr
        assert took < 60, f"a full disk must fail fast, not wait for a network timeout ({took:.0f} s)"
        assert env.left_on_provider() == 1, "nothing may be deleted at the provider while the state is unwritable"
        assert notified.exists() and "cannot write its state" in notified.read_text(), first.stderr[-2000:]

        target.free()
        second = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=child_env(extra))
        assert second.returncode == 0, second.stdout + second.stderr[-3000:]
        assert [body_of(m) for m in target.received] == [body_of(original)], "delivered exactly once"
        assert b"X-SmartPop-Redelivered: possible duplicate" in target.received[0]
        assert env.left_on_provider() == 0
    finally:
        target.controller.stop()
