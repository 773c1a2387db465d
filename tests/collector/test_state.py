"""The state store's view of one mailbox, as a poll reads it (no mail servers needed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smartpop.collector.state import Key, Store


def _key(uid: str, folder: str = "") -> Key:
    return Key("sammel", folder, "", uid)


def test_messages_of_splits_done_from_open_messages(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3")
    try:
        store.mark_done(_key("u-done"), "<d@x>", "digest-d", 10)
        store.note_attempt(_key("u-later"), "<l@x>", "digest-l", 10, "451 try later", 3600.0)
        store.note_attempt(_key("u-now"), "<n@x>", "digest-n", 10, "451 try later", 0.0)
        store.mark_done(_key("u-other-folder", "Archiv"), "<o@x>", "digest-o", 10)
        known = store.messages_of("sammel", "", "")
        assert set(known.done) == {"u-done"}
        assert isinstance(known.done["u-done"], float)
        assert set(known.open) == {"u-later", "u-now"}
        assert known.open["u-later"].state == "pending"
        assert known.open["u-later"].next_try is not None
        assert known.open["u-later"].next_try > known.open["u-now"].next_try  # type: ignore[operator]
        assert known.open["u-later"].attempts == 1
    finally:
        store.close()


def test_prune_marks_only_messages_gone_from_the_server(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    try:
        for uid in ("a", "b", "c"):
            store.mark_done(_key(uid), f"<{uid}@x>", f"digest-{uid}", 10)
        store.mark_done(_key("z", "Archiv"), "<z@x>", "digest-z", 10)
        store.prune("sammel", "", "", {"a", "c"})
        store.sync()
    finally:
        store.close()
    with sqlite3.connect(str(path)) as db:
        rows = dict(db.execute("SELECT uid, on_server FROM messages"))
    assert rows == {"a": 1, "b": 0, "c": 1, "z": 1}


def test_a_run_that_changes_nothing_keeps_its_time_in_memory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from smartpop.collector import state, statusread
    from smartpop.collector.statehub import HUB
    from smartpop.paths import Paths

    paths = Paths(tmp_path)
    store = Store(paths.state_db)
    try:
        store.run_started("sammel")
        assert store.run_finished("sammel", True, 2, 0, None, 0) == "changed"  # it collected
        assert store.run_finished("sammel", True, 0, 0, None, 0) == "changed"  # last_collected 2 -> 0
        written = sqlite3.connect(str(paths.state_db)).execute(
            "SELECT last_run FROM account_status WHERE account='sammel'").fetchone()[0]
        assert store.run_finished("sammel", True, 0, 0, None, 0) == "quiet"
        on_disk = sqlite3.connect(str(paths.state_db)).execute(
            "SELECT last_run FROM account_status WHERE account='sammel'").fetchone()[0]
        assert on_disk == written  # nothing was written
        held = HUB.liveness.get(paths.state_db, "sammel")
        assert held is not None and held[0] > written
        # In this process the status shows the time of the quiet run.
        assert statusread.read_account_status(paths)["sammel"]["last_run"] == statusread._iso(held[0])
        # An error is a change, and so is the recovery after it.
        assert store.run_finished("sammel", False, 0, 0, "connection refused", None) == "changed"
        assert store.run_finished("sammel", False, 0, 0, "connection refused", None) == "quiet"
        assert store.run_finished("sammel", True, 0, 0, None, 0) == "changed"
        # A time older than FLUSH_EVERY on disk is written at the next run.
        monkeypatch.setattr(state, "FLUSH_EVERY", 0.0)
        assert store.run_finished("sammel", True, 0, 0, None, 0) == "flushed"
        monkeypatch.setattr(state, "FLUSH_EVERY", 3600.0)
        assert store.run_finished("sammel", True, 0, 0, None, 0) == "quiet"
    finally:
        store.close()
    held = HUB.liveness.get(paths.state_db, "sammel")
    assert held is not None
    assert statusread.flush_liveness(paths) == 1
    assert HUB.liveness.get(paths.state_db, "sammel") is None
    row = sqlite3.connect(str(paths.state_db)).execute(
        "SELECT last_run, last_success, last_error FROM account_status WHERE account='sammel'").fetchone()
    assert row == (held[0], held[1], None)
