"""Crash safety: SIGKILL at every step boundary, restart, census (issue 3, point 5)."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Dict, List

import pytest

from smartpop.status import build_status
from support.collect import Env, assert_census_after_doubt, child_env, message

pytestmark = pytest.mark.mailstack

# How often each boundary is passed in one clean run over _mailbox(): five messages; one
# SMTP transaction each, plus the fallback transaction for the unknown user; one QUIT.
PASSES = {"after_retr": 5, "after_note": 5, "after_data": 6, "after_record": 5, "after_dele": 5, "before_quit": 1}
CASES = [(step, nth) for step, count in PASSES.items() for nth in range(1, count + 1)]


def _mailbox(env: Env) -> Dict[str, List[bytes]]:
    """Six messages: single and multi-recipient copies, one for an unknown local user (-> fallback)."""
    anna, ben, ghost = env.addr("anna"), env.addr("ben"), env.addr("ghost")
    return {
        "anna": [message(1, anna), message(3, anna), message(5, anna, extra=f"Delivered-To: {ben}\n")],
        "ben": [message(2, ben), message(5, anna, extra=f"Delivered-To: {ben}\n")],
        "postmaster": [message(4, ghost)],
        "_all": [message(1, anna), message(2, ben), message(3, anna), message(4, ghost),
                 message(5, anna, extra=f"Delivered-To: {ben}\n")],
    }


def _run(env: Env, step: str = "", nth: int = 1) -> subprocess.CompletedProcess[str]:
    extra = {"SMARTPOP_CRASH_AT": step, "SMARTPOP_CRASH_NTH": str(nth)}
    return subprocess.run([sys.executable, "-m", "support.crashrun", "--data", str(env.data), "fetch"],
                          capture_output=True, text=True, timeout=300, env=child_env(extra))


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
@pytest.mark.parametrize(("step", "nth"), CASES)
def test_sigkill_at_each_step_then_restart_loses_nothing_and_marks_duplicates(env: Env, step: str, nth: int,
                                                                             protocol: str) -> None:
    """A kill, then a clean run: every message arrives, at most once unmarked (issue 12: a copy
    whose 250 was not on disk yet is in doubt, so it is sent again with the redelivery mark)."""
    env.users("anna", "ben")
    box = _mailbox(env)
    originals = box["_all"]  # bodies are unique per message number, so they can be counted
    env.fill(originals)
    env.write_config([env.account(protocol=protocol)])
    crashed = _run(env, step, nth)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]  # it really died at that point
    final = _run(env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_census_after_doubt(env, {name: box[name] for name in ("anna", "ben", "postmaster")})
    # The counters come from the same durable records as the deliveries (the killed run counts too).
    report = {a["name"]: a for a in build_status(env.paths)["accounts"]}["sammel"]
    assert report["collected"] == len(originals), report
