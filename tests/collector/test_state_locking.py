"""Opening the state store while another connection writes to it: wait, never "database is locked".

SQLite does not call the busy handler (sqlite3.connect(timeout=...)) when a connection that
already holds a read lock asks for the write lock: it returns SQLITE_BUSY at once, to avoid a
deadlock. `PRAGMA journal_mode=WAL` on a store not yet in WAL mode (a new file) does exactly
that: it reads the header, then writes it. Several accounts of one `fetch` open a new store at
the same moment, so one of them failed its run with "database is locked" (seen in
test_collect.py::test_wrong_password_and_bad_tls_are_one_line_and_others_still_run).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from smartpop.collector import statedb, statusread
from smartpop.collector.daemon import DaemonHandle
from smartpop.collector.state import Store
from smartpop.config.schema import Config
from smartpop.errors import StateError
from smartpop.paths import Paths


def test_opening_a_new_store_waits_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    # A new store (rollback journal, not WAL yet) whose write lock another connection holds:
    # the window in which a second account of the same pass opens it.
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE early (x)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    try:
        conn = statedb.connect(path)  # before the fix: StateError "database is locked" at once
    finally:
        release.join()
        holder.close()
    try:
        assert time.monotonic() - started >= 0.4, "connect() did not wait for the other writer"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert {"early", "messages", "account_status"} <= {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_accounts_opening_a_new_store_together_all_run(tmp_path: Path) -> None:
    # As fetch_all does: one thread per account, each opening its own Store on a new file.
    failures: List[str] = []

    def one(path: Path, barrier: threading.Barrier, name: str) -> None:
        barrier.wait()
        try:
            store = Store(path)
            try:
                store.run_started(name)
            finally:
                store.close()
        except Exception as exc:
            failures.append(f"{name}: {exc}")

    for attempt in range(40):
        path = tmp_path / f"state-{attempt}.sqlite3"
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=one, args=(path, barrier, f"account-{n}")) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        check = sqlite3.connect(str(path))
        try:
            assert check.execute("SELECT COUNT(*) FROM account_status").fetchone()[0] == 4
        finally:
            check.close()


def test_a_push_state_that_could_not_be_written_is_written_next_time(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon writes how an account gets its mail only when that changes. A write that
    # failed (a locked or full store) was remembered as written, so the status kept the old
    # way until it changed again: `serve` showed "polling" while the account waited in IDLE.
    paths = Paths(tmp_path)
    handle = DaemonHandle(paths, Config())
    real = statusread.set_push
    calls: List[Optional[str]] = []

    def locked_once(at: Paths, name: str, push: Optional[str]) -> None:
        calls.append(push)
        if len(calls) == 1:
            raise StateError("state store is unusable: database is locked")
        real(at, name, push)

    monkeypatch.setattr(statusread, "set_push", locked_once)
    try:
        handle._set_push("sammel", "idle")  # fails, logged
        handle._set_push("sammel", "idle")  # the same state again: written now
        handle._set_push("sammel", "idle")  # recorded: no write
    finally:
        handle._finish()  # on stop the recorded 'idle' is reset (nobody waits in IDLE any more)
    assert calls == ["idle", "idle", None]
