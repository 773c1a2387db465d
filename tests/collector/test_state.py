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
