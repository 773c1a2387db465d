"""SIGKILL at random moments, not only at quiesced step boundaries (issue 12 §1).

`smartpop fetch` runs against the real Dovecot and Postfix and is killed after a random delay,
again and again, while the mailbox is refilled; kills land anywhere: in the TLS handshake, in a
RETR, between the durable note and the dot, while Postfix answers, between the record and the
DELE. Then a clean run, and the census: every message at every recipient (0 lost), nothing at a
wrong recipient, and every duplicate a marked copy in doubt.

SMARTPOP_KILLS sets the number of kills per protocol (default 100); SMARTPOP_KILL_SEED replays a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from support.collect import Env, assert_census_after_doubt, child_env, message

pytestmark = [pytest.mark.mailstack, pytest.mark.slow]
KILLS = int(os.environ.get("SMARTPOP_KILLS", "100"))
BATCH = 60


def _batch(env: Env, start: int, expected: Dict[str, List[bytes]]) -> List[bytes]:
    """BATCH messages: single recipients, a two-recipient copy, and one for nobody (-> fallback)."""
    anna, ben, ghost = env.addr("anna"), env.addr("ben"), env.addr("ghost")
    out: List[bytes] = []
    for n in range(start, start + BATCH):
        kind = n % 5
        if kind in (0, 1):
            raw = message(n, anna)
            expected["anna"].append(raw)
        elif kind == 2:
            raw = message(n, ben)
            expected["ben"].append(raw)
        elif kind == 3:
            raw = message(n, anna, extra=f"Delivered-To: {ben}\n")
            expected["anna"].append(raw)
            expected["ben"].append(raw)
        else:
            raw = message(n, ghost)
            expected["postmaster"].append(raw)
        out.append(raw)
    return out


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_kills_at_random_moments_lose_nothing_and_mark_every_duplicate(env: Env, protocol: str,
                                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("SMARTPOP_KILL_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    env.users("anna", "ben")
    env.write_config([env.account(protocol=protocol)])
    expected: Dict[str, List[bytes]] = {"anna": [], "ben": [], "postmaster": []}
    argv = [sys.executable, "-m", "smartpop", "--data", str(env.data), "fetch"]
    kills = finished = 0
    number = 1
    while kills < KILLS:
        if env.left_on_provider() == 0:
            env.fill(_batch(env, number, expected))
            number += BATCH
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env({}))
        # Start-up takes ~0.3 s; a run over BATCH messages about half a second more.
        try:
            proc.wait(timeout=rng.uniform(0.2, 0.9))
            finished += 1
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
    clean = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=child_env({}))
    assert clean.returncode == 0, f"seed {seed}: {clean.stderr[-3000:]}"
    extra = assert_census_after_doubt(env, expected)
    total = sum(len(v) for v in expected.values())
    (tmp_path / "census.txt").write_text(f"seed={seed} kills={kills} finished={finished} copies={total} "
                                         f"marked_duplicates={extra}\n")
    print(f"{protocol}: seed {seed}, {kills} kills, {finished} runs finished, {total} copies, "
          f"{extra} marked duplicates, 0 lost")
