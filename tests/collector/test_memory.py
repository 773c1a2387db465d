"""Flat memory (issue 3, point 7): a 50 MB message passes with a peak RSS under 60 MB."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from support.collect import Env, body_of, child_env

pytestmark = [pytest.mark.mailstack, pytest.mark.slow]

LIMIT_KIB = 60 * 1024


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_50mb_message_streams_through_the_spool(env: Env, protocol: str) -> None:
    env.users("anna")
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
    body = line * (50 * 1024 * 1024 // len(line))
    head = (f"Return-Path: <big@remote.test>\nDelivered-To: {env.addr('anna')}\nFrom: big@remote.test\n"
            f"Subject: fifty megabytes\nMessage-ID: <big@remote.test>\n\n").encode()
    env.fill([head + body])
    want = hashlib.sha256(body).hexdigest()
    del body  # the measurement is of the child's own pages (see support/rssrun.py)
    env.write_config([env.account(protocol=protocol)])
    proc = subprocess.run([sys.executable, "-m", "support.rssrun", "--data", str(env.data), "fetch"],
                          capture_output=True, text=True, timeout=600, env=child_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss = int(proc.stdout.strip().splitlines()[-1].split("=")[1])
    print(f"peak RSS of `smartpop fetch` with a 50 MB message over {protocol}: {rss / 1024:.1f} MB")
    assert rss < LIMIT_KIB, f"peak RSS {rss} KiB"
    delivered = env.local("anna")
    assert len(delivered) == 1
    assert hashlib.sha256(body_of(delivered[0])).hexdigest() == want
    assert env.left_on_provider() == 0
