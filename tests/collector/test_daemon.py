"""Scheduling (issue 3, point 8): interval/backoff, the per-account lock, and a clean SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from typing import List

import pytest

from smartpop import fsutil
from smartpop.collector import daemon, service
from smartpop.collector.daemon import next_delay
from smartpop.collector.runner import AccountResult
from smartpop.collector.statusread import read_account_status
from smartpop.config.schema import Account
from support.collect import Env, body_of, child_env, message
from support.ports import free_ports

pytestmark = pytest.mark.mailstack


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
    """Wait for an event (not a timing assertion): fail only if it never happens."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_backoff_doubles_and_is_capped() -> None:
    assert next_delay(60, 0) == 60
    assert [next_delay(60, n) for n in (1, 2, 3)] == [120, 240, 480]
    assert next_delay(60, 30) == 3600
    assert next_delay(7200, 3) == 7200  # never more often than the interval


def test_lock_makes_a_concurrent_fetch_skip(env: Env) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    config = env.write_config()
    env.paths.locks.mkdir(exist_ok=True)
    with fsutil.locked(fsutil.lock_path(env.paths, "sammel")):
        summary = service.fetch_all(env.paths, config, lock_timeout=0.2)
        assert summary.results["sammel"].skipped and summary.ok
        assert env.local("anna") == [] and env.left_on_provider() == 1
    assert service.fetch_all(env.paths, config).results["sammel"].collected == 1


def test_two_fetch_processes_never_work_one_mailbox_at_once(env: Env) -> None:
    env.users("anna", "ben")
    originals = [message(n, env.addr("anna" if n % 2 else "ben")) for n in range(60)]
    env.fill(originals)
    env.write_config()
    procs = [subprocess.Popen([sys.executable, "-m", "smartpop", "--data", str(env.data), "fetch"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
             for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    got = sorted(body_of(m) for m in env.local("anna") + env.local("ben"))
    assert got == sorted(body_of(m) for m in originals)
    assert env.left_on_provider() == 0


def test_sigterm_stops_fetch_after_the_current_message(env: Env) -> None:
    env.users("anna")
    originals = [message(n, env.addr("anna"), body=("z" * 70 + "\n") * 300) for n in range(300)]
    env.fill(originals)
    env.write_config()
    proc = subprocess.Popen([sys.executable, "-m", "smartpop", "--data", str(env.data), "fetch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) >= 3 or proc.poll() is not None, "first deliveries")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err[-2000:]
    assert "stopping after the current message" in err
    with sqlite3.connect(str(env.paths.state_db)) as db:
        assert db.execute("SELECT COUNT(*) FROM copies WHERE status='sending'").fetchone()[0] == 0
    done_first = len(env.local("anna"))
    assert 0 < done_first < len(originals)  # it really stopped early
    assert env.left_on_provider() == len(originals) - done_first  # QUIT committed the finished ones
    assert service.fetch_all(env.paths, env.write_config()).ok
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in originals)
    assert env.left_on_provider() == 0


def test_serve_runs_the_daemon_and_sigterm_stops_it_cleanly(env: Env) -> None:
    env.users("anna")
    originals = [message(n, env.addr("anna")) for n in range(5)]
    env.fill(originals)
    env.write_config(web={"port": free_ports(1)[0]})
    proc = subprocess.Popen([sys.executable, "-m", "smartpop", "--data", str(env.data), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        _wait_for(lambda: (read_account_status(env.paths).get("sammel") or {}).get("last_success") is not None
                  or proc.poll() is not None, "the daemon's first successful run")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-2000:]
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in originals)
    assert env.left_on_provider() == 0
    status = read_account_status(env.paths)["sammel"]
    assert status["collected"] == 5 and status["waiting"] == 0 and status["last_error"] is None
    assert not status["running"]


def test_daemon_picks_up_config_changes(env: Env) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    config = env.write_config([env.account(enabled=False)])
    handle = service.start_daemon(env.paths, config)
    try:
        time.sleep(1.5)  # let the scheduler see the disabled account at least once (not an assertion)
        assert env.local("anna") == []
        time.sleep(1.0)  # a new mtime for config.json on coarse-grained file systems
        env.write_config([env.account(enabled=True)])
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "delivery after the config change")
    finally:
        assert handle.stop(timeout=60)
    assert env.left_on_provider() == 0


def test_daemon_polls_again_after_the_interval(env: Env) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    config = env.write_config([env.account(interval=10)])
    handle = service.start_daemon(env.paths, config)
    try:
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "the first poll")
        env.fill([message(2, env.addr("anna"))])
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 2, "the next poll, one interval later")
    finally:
        assert handle.stop(timeout=60)
    assert env.left_on_provider() == 0


def test_imap_idle_collects_new_mail_without_waiting_for_the_interval(env: Env) -> None:
    # The scheduler has no tick: the pushed run is started by the wake-up itself.
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    config = env.write_config([env.account(protocol="imap", idle=True, interval=3600)])
    handle = service.start_daemon(env.paths, config)
    try:
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "the first run")
        env.fill([message(2, env.addr("anna"))])
        # The interval is an hour: only IDLE push can bring this in within the wait.
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 2, "delivery pushed by IDLE", timeout=90)
        env.fill([message(3, env.addr("anna"))])
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 3, "a second push", timeout=90)
    finally:
        assert handle.stop(timeout=30)  # a worker waiting in IDLE stops promptly
    assert env.left_on_provider() == 0


def test_a_push_that_brings_nothing_does_not_loop(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that keeps announcing mail SmartPop cannot take (here: every IDLE says "new
    # mail", every run collects nothing) gets one immediate run, then its polling interval.
    runs: List[str] = []

    def run_account(paths: object, config: object, account: Account, **_: object) -> AccountResult:
        runs.append(account.name)
        return AccountResult(account.name, remaining=0)

    monkeypatch.setattr(daemon, "run_account", run_account)
    class Announcing:
        mail = True

        def close(self) -> None:
            pass

    monkeypatch.setattr(daemon.IdleSession, "open",
                        classmethod(lambda cls, account, known=-1, credential=None: Announcing()))
    config = env.write_config([env.account(protocol="imap", idle=True, interval=3600)])
    handle = service.start_daemon(env.paths, config)
    try:
        _wait_for(lambda: len(runs) >= 2, "the run set off by the first push")
        time.sleep(1.0)  # a busy loop would have made hundreds of runs by now
    finally:
        assert handle.stop(timeout=30)
    assert len(runs) == 2, len(runs)
