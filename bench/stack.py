"""The mail servers of the benchmark: tests/support/mailstack.py (Dovecot + Postfix on loopback).

The fixture is reused as is (free ports, short dir under /tmp); this module only adds what
a benchmark needs on top: unlimited message size for the 200 MB message, emptying the
local maildirs between runs, and waiting until Postfix has written every file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from support.mailstack import MailStack, have_mail_servers  # noqa: E402

LOCAL_DOMAIN = "firma.test"
PROVIDER_DOMAIN = "provider.test"

__all__ = ["LOCAL_DOMAIN", "PROVIDER_DOMAIN", "MailStack", "have_mail_servers", "start"]


def start() -> MailStack:
    """Start Dovecot + Postfix and lift Postfix's message size limit (the fixture sets 100 MB)."""
    stack = MailStack.start((LOCAL_DOMAIN, PROVIDER_DOMAIN))
    try:
        etc = str(stack.root / "postfix/etc")
        # Our own running instance only: the 200 MB message of the memory bench needs this.
        subprocess.run(["postconf", "-c", etc, "-e", "message_size_limit = 0"], check=True, capture_output=True)
        subprocess.run(["postfix", "-c", etc, "reload"], check=True, capture_output=True)
    except BaseException:
        stack.stop()
        raise
    return stack


def postfix_etc(stack: MailStack) -> str:
    """The Postfix config dir (for `sendmail -C`)."""
    return str(stack.root / "postfix/etc")


def local_files(stack: MailStack, address: str) -> list[Path]:
    """Files in the local maildir of `address` (new/ and cur/)."""
    maildir = stack.local_maildir(address)
    return [p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()]


def empty_local(stack: MailStack, addresses: list[str]) -> None:
    """Delete every delivered message of `addresses` (between runs)."""
    for address in addresses:
        for path in local_files(stack, address):
            path.unlink()


def wait_local(stack: MailStack, expected: dict[str, int], timeout: float) -> float | None:
    """Block until the maildirs hold `expected` files and Postfix's queue is empty; the moment, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(local_files(stack, a)) >= n for a, n in expected.items()) and stack.queue_empty():
            return time.perf_counter()
        time.sleep(0.02)
    return None


def disk_free_gb(path: str = "/tmp") -> float:
    """Free space where the stack keeps its maildirs."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e9
