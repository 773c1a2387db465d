"""An apply interrupted half-way: SIGKILL leaves a transaction that the next run recovers;
SIGTERM makes the running apply roll itself back. Both with the real CLI.

The seam: `--postfix-bin` points at a tools dir whose `postmap` is a slow wrapper, so the
process is caught after main.cf, master.cf and the maps were written but before it finished.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from support.postfix_relay import config_digest, have_postfix, relay_argv, run_relay, smartpop_env, write_config

pytestmark = pytest.mark.skipif(not have_postfix(), reason="needs root and the postfix tools")
DATA = Path(__file__).resolve().parent.parent / "data" / "maincf"
RELAY = {"enabled": True, "host": "smtp.provider.test", "port": 587, "security": "starttls",
         "username": "anna@firma.test", "password": "main-pw",
         "sender_relays": [{"sender": "@zweit.test", "host": "mail.zweit.test", "port": 465,
                            "security": "ssl", "username": "bob@zweit.test", "password": "other-pw"}]}


class Rig:
    """A Postfix dir (not running), a data dir and a tools dir with a slow postmap."""

    def __init__(self, tmp: Path) -> None:
        self.etc = tmp / "etc"
        self.etc.mkdir()
        shutil.copy(DATA / "mailplus.cf", self.etc / "main.cf")
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf")
        self.data = tmp / "data"
        write_config(self.data, RELAY)
        self.tools = tmp / "slowbin"
        self.tools.mkdir()
        self.started = tmp / "postmap.started"
        self.pids: List[int] = []
        for name in ("postconf", "postfix"):
            os.symlink(shutil.which(name) or "", self.tools / name)
        wrapper = self.tools / "postmap"
        # Records its own pid and its sleeper's, so the test can end exactly these processes.
        wrapper.write_text(f"#!/bin/sh\nsleep 30 &\necho \"$$ $!\" > {self.started}\nwait\n"
                           f"exec {shutil.which('postmap')} \"$@\"\n")
        wrapper.chmod(0o755)

    def start_apply(self) -> subprocess.Popen[str]:
        """Start `relay apply` and return once it sits in the slow postmap (all files written)."""
        proc = subprocess.Popen(relay_argv(self.data, "apply", self.etc, "--postfix-bin", str(self.tools)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=smartpop_env())
        deadline = time.monotonic() + 60
        while not (self.started.exists() and self.started.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "apply never reached postmap"
            time.sleep(0.05)
        self.pids += [int(p) for p in self.started.read_text().split()]
        return proc

    def cleanup(self) -> None:
        """End the wrapper processes this test started (by pid)."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @property
    def txn(self) -> Path:
        return self.data / "relay" / "state" / "txn"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.cleanup()


def _kill_mid_apply(rig: Rig) -> Tuple[dict, dict]:
    before = config_digest(rig.etc)
    proc = rig.start_apply()
    half = config_digest(rig.etc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return before, half


@pytest.mark.parametrize("next_action", ["rollback", "apply"])
def test_sigkill_mid_apply_is_recovered_by_the_next_run(rig: Rig, next_action: str) -> None:
    before, half = _kill_mid_apply(rig)
    assert half != before and "maps/smartpop_sasl_passwd" in half  # really caught half-way
    assert (rig.txn / "manifest.json").is_file()  # the transaction it left behind
    proc = run_relay(rig.data, next_action, rig.etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recovered" in proc.stdout
    assert not rig.txn.exists()
    if next_action == "rollback":
        assert config_digest(rig.etc) == before  # byte-identical to before the killed apply
        return
    assert run_relay(rig.data, "verify", rig.etc).returncode == 0  # correctly applied
    assert "BEGIN SMARTPOP" in (rig.etc / "main.cf").read_text()
    assert (rig.etc / "main.cf").read_text().count("BEGIN SMARTPOP") == 1
    assert run_relay(rig.data, "rollback", rig.etc).returncode == 0
    assert config_digest(rig.etc) == before


def test_sigterm_mid_apply_rolls_back_at_once(rig: Rig) -> None:
    before = config_digest(rig.etc)
    proc = rig.start_apply()
    assert config_digest(rig.etc) != before
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode not in (0, None, -signal.SIGTERM), (out, err)  # it handled the signal
    assert "rolled back" in out + err
    assert config_digest(rig.etc) == before
    assert not rig.txn.exists()
    # Nothing was committed: a later rollback has nothing to do and changes nothing.
    proc2 = run_relay(rig.data, "rollback", rig.etc)
    assert proc2.returncode == 0 and "nothing to roll back" in proc2.stdout
    assert config_digest(rig.etc) == before
