"""What the account runs of one process share: hand-over window, per-digest order, step seam (no servers)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import pytest

from smartpop.collector import daemon, service
from smartpop.collector.concurrency import DigestLocks, Guards, HandOver, Pending
from smartpop.collector.runner import AccountResult
from smartpop.config.schema import Account, Config
from smartpop.config.secret import Secret
from smartpop.paths import Paths
from smartpop.web import jobs


def test_copies_with_one_digest_are_placed_one_after_another() -> None:
    locks = DigestLocks()
    order: List[str] = []
    first_inside = threading.Event()

    def second() -> None:
        with locks.one_at_a_time("d1"):
            order.append("second")

    with locks.one_at_a_time("d1"):
        thread = threading.Thread(target=second)
        thread.start()
        first_inside.set()
        time.sleep(0.1)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
    assert locks._locks == {}  # an idle process holds no lock per digest


def test_other_digests_and_no_identity_do_not_wait() -> None:
    locks = DigestLocks()
    with locks.one_at_a_time("d1"):
        done = threading.Event()

        def other() -> None:
            with locks.one_at_a_time("d2"), locks.one_at_a_time(""), locks.one_at_a_time(""):
                done.set()

        threading.Thread(target=other).start()
        assert done.wait(5)
    assert locks._locks == {}


def test_quiet_waits_until_nobody_is_inside_the_hand_over_window() -> None:
    window = HandOver()
    window.enter()
    got = threading.Event()

    def kill_hook() -> None:
        with window.quiet():
            got.set()

    threading.Thread(target=kill_hook).start()
    assert not got.wait(0.1)
    window.leave()
    assert got.wait(5)


def test_guards_are_separate_objects_and_the_seam_does_nothing_by_default() -> None:
    seen: List[str] = []
    mine = Guards(seen.append)
    production = Guards()  # what a process builds at its entry
    mine.checkpoint("after_note")
    production.checkpoint("after_note")  # production: a boundary is just a boundary
    assert seen == ["after_note"]
    assert mine.handover is not production.handover and mine.digests is not production.digests


def test_pending_bounds_the_messages_in_the_workers() -> None:
    pending = Pending()
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        futures = [pending.submit(pool, release.wait, 5) for _ in range(2)]
        assert pending.count == 2
        threading.Timer(0.1, release.set).start()
        pending.wait_below(2)
        assert pending.count < 2
        assert all(f.result() for f in futures)
    assert pending.count == 0


def _accounts(*names: str) -> Config:
    return Config(accounts=[Account(name=name, protocol="pop3", host="127.0.0.1", port=995, security="ssl",
                                    username=name, password=Secret("pw")) for name in names])


def _capture_runs(monkeypatch: pytest.MonkeyPatch, module: Any) -> List[Guards]:
    """Replace `module.run_account` with one that records the guards each run was given."""
    given: List[Guards] = []

    def run_account(paths: object, config: object, account: Account, *args: object, guards: Guards,
                    **_: object) -> AccountResult:
        given.append(guards)
        return AccountResult(account.name, remaining=0)

    monkeypatch.setattr(module, "run_account", run_account)
    return given


def test_a_fetch_pass_hands_its_guards_to_every_account_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    given = _capture_runs(monkeypatch, service)
    config, mine = _accounts("a", "b", "c"), Guards()
    service.fetch_all(Paths(tmp_path), config, guards=mine)
    assert len(given) == 3 and all(guards is mine for guards in given)
    given.clear()
    service.fetch_all(Paths(tmp_path), config)  # no guards given: the pass's runs still share one
    assert len(given) == 3 and given[0] is not mine and all(guards is given[0] for guards in given)


def test_the_daemon_runs_with_the_guards_it_was_started_with(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    given = _capture_runs(monkeypatch, daemon)
    mine = Guards()
    handle = daemon.DaemonHandle(Paths(tmp_path), _accounts("a"), mine)
    assert handle.guards is mine
    config = _accounts("a")
    handle._collect(config.accounts[0], config)  # one scheduled run, without the scheduler thread
    assert given == [mine]


def test_fetch_now_in_the_web_ui_shares_the_daemons_guards(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # In `serve` the daemon's handle hands its guards to the app's FetchJobs (web/server.py).
    given: List[Any] = []
    monkeypatch.setattr(jobs.store, "load", lambda paths: _accounts("a"))
    monkeypatch.setattr(jobs.collector, "fetch_all",
                        lambda *args, guards, **_: given.append(guards) or service.FetchSummary())
    mine = Guards()
    fetch = jobs.FetchJobs(Paths(tmp_path), mine)
    fetch.start()
    fetch.wait(30)
    assert given == [mine] and fetch.snapshot()["ok"] is True
