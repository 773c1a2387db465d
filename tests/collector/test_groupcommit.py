"""The group-commit engine on its own: a fake commit that records batches, no SQLite."""

from __future__ import annotations

import threading
import time
from typing import Callable, Hashable, List, Optional

import pytest

from smartpop.collector.groupcommit import GroupCommit, Statement
from smartpop.errors import StateError


def _write(name: str) -> List[Statement]:
    return [(name, (), False)]


class Recorder:
    """A commit function that records each batch; `gate` (if set) holds a commit until released."""

    def __init__(self) -> None:
        self.batches: List[List[str]] = []
        self.gate: Optional[threading.Event] = None
        self.entered = threading.Event()  # a commit is running (waiting at the gate)
        self.fail: Optional[BaseException] = None

    def __call__(self, batch: List[Statement]) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.batches.append([sql for sql, _, _ in batch])


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_queued_writes_wait_for_a_commit_and_go_in_order() -> None:
    commit = Recorder()
    engine = GroupCommit(commit, "store")
    first = engine.enqueue(_write("a"), durable=False)
    second = engine.enqueue(_write("b") + _write("c"), durable=False)
    assert (first, second) == (1, 2)
    assert commit.batches == [] and not engine.is_durable(first)
    engine.sync()
    assert commit.batches == [["a", "b", "c"]]  # one commit for everything queued
    assert engine.is_durable(first) and engine.is_durable(second)
    engine.sync()  # nothing queued: no empty commit
    assert commit.batches == [["a", "b", "c"]]


def test_a_durable_write_commits_itself_and_everything_before_it() -> None:
    commit = Recorder()
    engine = GroupCommit(commit, "store")
    queued = engine.enqueue(_write("queued"), durable=False)
    durable = engine.enqueue(_write("durable"), durable=True)
    assert commit.batches == [["queued", "durable"]]
    assert engine.is_durable(queued) and engine.is_durable(durable)
    assert engine.enqueue([], durable=True) == 3  # a write with no statement: numbered, nothing to commit
    assert engine.is_durable(3) and len(commit.batches) == 1


def test_sync_upto_commits_only_when_that_write_is_not_on_disk() -> None:
    commit = Recorder()
    engine = GroupCommit(commit, "store")
    first = engine.enqueue(_write("a"), durable=False)
    engine.sync_upto(0)  # nothing to wait for
    assert commit.batches == []
    engine.sync_upto(first)
    assert commit.batches == [["a"]]
    second = engine.enqueue(_write("b"), durable=False)
    engine.sync_upto(first)  # already committed: no commit, b stays queued
    assert commit.batches == [["a"]] and not engine.is_durable(second)
    third = engine.enqueue(_write("c"), durable=False)
    engine.sync_upto(second)  # a commit takes the whole queue, c included
    assert commit.batches == [["a"], ["b", "c"]] and engine.is_durable(third)


def test_writers_waiting_during_a_commit_share_the_next_one() -> None:
    commit = Recorder()
    commit.gate = threading.Event()
    engine = GroupCommit(commit, "store")
    first = threading.Thread(target=engine.enqueue, args=(_write("first"), True, ("first",)))
    first.start()
    assert commit.entered.wait(10)  # the first commit is under way, holding its batch
    others = [threading.Thread(target=engine.enqueue, args=(_write(f"w{n}"), True, (f"w{n}",))) for n in range(7)]
    for thread in others:
        thread.start()
    _wait_until(lambda: all(engine.pending(f"w{n}") for n in range(7)))  # all seven queued, waiting
    commit.gate.set()
    for thread in [first, *others]:
        thread.join(10)
    assert commit.batches[0] == ["first"]
    assert len(commit.batches) == 2 and sorted(commit.batches[1]) == [f"w{n}" for n in range(7)]


def test_a_failed_commit_reaches_every_waiter_and_breaks_the_engine() -> None:
    commit = Recorder()
    commit.gate = threading.Event()
    commit.fail = OSError("disk full")
    engine = GroupCommit(commit, "state store x")
    errors: List[BaseException] = []

    def durable(name: str) -> None:
        try:
            engine.enqueue(_write(name), durable=True, tags=(name,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=durable, args=(f"w{n}",)) for n in range(5)]
    threads[0].start()
    assert commit.entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    _wait_until(lambda: all(engine.pending(f"w{n}") for n in range(5)))
    commit.gate.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 5 and all(isinstance(exc, StateError) for exc in errors)
    assert all("state store x failed: disk full" in str(exc) for exc in errors)
    commit.fail = None  # the disk recovered, but nothing after a failed batch may be committed
    with pytest.raises(StateError, match="disk full"):
        engine.enqueue(_write("later"), durable=False)
    with pytest.raises(StateError, match="disk full"):
        engine.sync()
    assert commit.batches == []


def test_many_threads_lose_nothing_and_keep_each_threads_order() -> None:
    commit = Recorder()
    engine = GroupCommit(commit, "store")
    errors: List[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                engine.enqueue(_write(f"t{n}.{i}"), durable=i % 10 == 0, tags=(f"t{n}",))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    engine.sync()
    assert errors == []
    written = [sql for batch in commit.batches for sql in batch]
    assert len(written) == 8 * 300 and len(set(written)) == 8 * 300
    for n in range(8):
        mine = [int(sql.split(".")[1]) for sql in written if sql.startswith(f"t{n}.")]
        assert mine == list(range(300))
    assert len(commit.batches) <= 8 * 30 + 1  # at most one commit per durable write, plus the sync
    assert all(engine.pending(f"t{n}") == 0 for n in range(8))


def test_tags_are_watched_from_their_first_queued_write_to_their_last_commit() -> None:
    events: List[str] = []
    commit = Recorder()
    commit.gate = threading.Event()

    def queued(tag: Hashable) -> None:
        events.append(f"queued {tag}")

    def settled(tag: Hashable) -> None:
        events.append(f"settled {tag}")

    engine = GroupCommit(commit, "store", on_queued=queued, on_settled=settled)
    first = engine.enqueue(_write("a"), durable=False, tags=("t", "u"))
    engine.enqueue(_write("b"), durable=False, tags=("u",))
    assert engine.pending("t") == first and engine.pending("u") == 2 and engine.pending("v") == 0
    assert events == ["queued t", "queued u"]
    syncing = threading.Thread(target=engine.sync)
    syncing.start()
    assert commit.entered.wait(10)  # a and b are being committed
    third = engine.enqueue(_write("c"), durable=False, tags=("u",))  # u gets a write the commit does not hold
    commit.gate.set()
    syncing.join(10)
    assert events == ["queued t", "queued u", "settled t"]  # u still waits for c
    assert engine.pending("t") == 0 and engine.pending("u") == third
    engine.sync_upto(third)
    assert events[-1] == "settled u" and engine.pending("u") == 0


def test_abandon_forgets_and_returns_the_tags_still_waiting() -> None:
    engine = GroupCommit(Recorder(), "store")
    engine.enqueue(_write("a"), durable=True, tags=("done",))
    engine.enqueue(_write("b"), durable=False, tags=("open", "also"))
    assert sorted(map(str, engine.abandon())) == ["also", "open"]
    assert engine.pending("open") == 0 and engine.abandon() == []
