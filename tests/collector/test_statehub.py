"""What the stores of one process share (StateHub), without mail servers."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import List

import pytest

from smartpop.collector import statehub
from smartpop.collector.state import Key, Store
from smartpop.collector.statehub import KeptReaders, PruneTimes, QueuedLedger, StateHub
from smartpop.errors import StateError


class Holder:
    """A stand-in store that records which ledger digests it was asked to commit."""

    def __init__(self) -> None:
        self.synced: List[str] = []

    def sync_ledger(self, digest: str) -> None:
        self.synced.append(digest)


def test_the_queued_ledger_commits_every_holder_of_a_digest_once() -> None:
    ledger = QueuedLedger()
    first, second = Holder(), Holder()
    ledger.add("d1", first)
    ledger.add("d1", first)
    ledger.add("d1", second)
    ledger.add("d2", second)
    ledger.commit("d1")
    assert first.synced == ["d1"] and second.synced == ["d1"]
    ledger.discard(["d1", "d2"], second)
    ledger.discard(["unknown"], second)
    ledger.commit("d1")
    ledger.commit("d2")
    assert first.synced == ["d1", "d1"] and second.synced == ["d1"]


def test_prune_times_are_kept_per_store_file_and_account(tmp_path: Path) -> None:
    prunes = PruneTimes()
    assert prunes.last(tmp_path / "a", "sammel") is None
    prunes.note(tmp_path / "a", "sammel", 5.0)
    assert prunes.last(tmp_path / "a", "sammel") == 5.0
    assert prunes.last(tmp_path / "b", "sammel") is None and prunes.last(tmp_path / "a", "other") is None


def test_a_duplicate_check_commits_the_ledger_rows_another_store_still_queues(tmp_path: Path) -> None:
    hub = StateHub()
    db = tmp_path / "state.sqlite3"
    writer, reader = Store(db, hub), Store(db, hub)
    try:
        key = Key("sammel", "", "1", "u1")
        writer.begin_sending(key, ["anna@firma.de"], "user", "", "digest-1")
        writer.finish_sending(key, {"anna@firma.de": "250 ok"}, [], "digest-1", ["anna@firma.de"])
        assert not writer.is_durable(writer.mark_done(key, "<u1@x>", "digest-1", 10))
        commits = writer.commits
        # Another account's run finds the row although the writer has not committed it yet.
        assert reader.in_ledger("digest-1", ["anna@firma.de", "ben@firma.de"]) == {"anna@firma.de"}
        assert writer.commits == commits + 1
        # On disk now: the next check commits nothing more.
        assert reader.in_ledger("digest-1", ["anna@firma.de"]) == {"anna@firma.de"}
        assert writer.commits == commits + 1
    finally:
        writer.close()
        reader.close()


def test_a_closed_store_is_no_longer_asked_for_its_ledger_rows(tmp_path: Path) -> None:
    hub = StateHub()
    db = tmp_path / "state.sqlite3"
    store = Store(db, hub)
    key = Key("sammel", "", "1", "u1")
    store.finish_sending(key, {"anna@firma.de": "250 ok"}, [], "digest-1", ["anna@firma.de"])
    store._reader.close()  # as if the process lost the store: its final commit fails
    store.conn.close()
    with pytest.raises(StateError):
        store.close()
    other = Store(db, hub)
    try:
        assert other.in_ledger("digest-1", ["anna@firma.de"]) == set()  # not waiting for the lost store
    finally:
        other.close()


def _db(path: Path) -> Path:
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (?)", (path.name,))
    conn.commit()
    conn.close()
    return path


def _names(conn: sqlite3.Connection) -> List[str]:
    return [row[0] for row in conn.execute("SELECT x FROM t")]


def test_kept_readers_reuse_reopen_a_replaced_file_and_stay_bounded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    readers = KeptReaders()
    db = _db(tmp_path / "one.sqlite3")
    seen: List[int] = []

    def which(conn: sqlite3.Connection) -> List[str]:
        seen.append(id(conn))
        return _names(conn)

    assert readers.read(db, which) == ["one.sqlite3"]
    assert readers.read(db, which) == ["one.sqlite3"] and seen[0] == seen[1]  # kept open
    replacement = _db(tmp_path / "new.sqlite3")
    os.replace(replacement, db)  # a restored backup: another inode
    assert readers.read(db, which) == ["new.sqlite3"]
    monkeypatch.setattr(statehub, "KEPT_READERS", 2)
    for n in range(4):
        readers.read(_db(tmp_path / f"more{n}.sqlite3"), _names)
    assert len(readers._open) == 2


def test_a_kept_reader_that_failed_is_closed_and_opened_again(tmp_path: Path) -> None:
    readers = KeptReaders()
    db = _db(tmp_path / "one.sqlite3")

    def broken(conn: sqlite3.Connection) -> List[str]:
        conn.execute("SELECT nothing FROM nowhere")
        return []

    with pytest.raises(sqlite3.OperationalError):
        readers.read(db, broken)
    assert readers.read(db, _names) == ["one.sqlite3"]
