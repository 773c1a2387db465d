"""Group commit: the writes of many threads share one commit, and so one fsync.

Each write (a list of statements) gets a number when it is queued. Whoever needs writes on
disk (a durable write, a read that depends on them, the step before a deletion) waits until
the committed number reaches theirs. One waiter at a time takes the whole queue and commits
it; the others wait for that commit and find their writes in it, or take the next batch.

A failed commit breaks the engine for good: every waiter, and every later caller, gets the
error. Nothing queued after it is committed, because a later batch may depend on the failed
one (a 'done' record on the 'sending' note before it).

Writes may carry tags (what they touch: a message, a ledger digest): `pending(tag)` is the
number of the last write of that tag not on disk yet, so a read that depends on it commits
exactly when it has to. A tag is forgotten once its last write is committed, so the map only
holds what is not on disk (flat memory over 100,000 messages).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Deque, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

from smartpop.errors import StateError

Statement = Tuple[str, Any, bool]  # sql, parameters, executemany?
Watcher = Callable[[Hashable], None]


def _unwatched(tag: Hashable) -> None:
    """Nobody outside needs to know when a tag starts or stops waiting."""


class GroupCommit:
    """A queue of numbered writes that `commit` writes in batches; thread-safe."""

    def __init__(self, commit: Callable[[List[Statement]], None], name: str,
                 on_queued: Watcher = _unwatched, on_settled: Watcher = _unwatched) -> None:
        self._commit = commit  # writes one batch in one transaction, or raises
        self._name = name  # what failed, in the StateError: "state store /path"
        # Called with the lock held, so they see the tags in the order they change.
        self._on_queued = on_queued  # a tag got its first write not on disk
        self._on_settled = on_settled  # a tag's last write reached the disk
        self._cv = threading.Condition()  # guards everything below
        self._queue: List[Statement] = []
        self._tag_seq: Dict[Hashable, int] = {}  # tag -> its last write not on disk yet
        # (seq, tags) of queued writes, oldest first: trimmed after each commit.
        self._marks: Deque[Tuple[int, Sequence[Hashable]]] = collections.deque()
        self._seq = 0  # writes queued so far
        self._committed = 0  # writes on disk so far
        self._committing = False
        self._broken: Optional[BaseException] = None

    def enqueue(self, statements: Iterable[Statement], durable: bool, tags: Sequence[Hashable] = ()) -> int:
        """Queue one write; with `durable`, return only once it (and all before it) is committed."""
        with self._cv:
            self._raise_if_broken()
            self._queue.extend(statements)
            self._seq += 1
            mine = self._seq
            for tag in tags:
                if tag not in self._tag_seq:
                    self._on_queued(tag)
                self._tag_seq[tag] = mine
            if tags:
                self._marks.append((mine, tags))
        if durable:
            self._wait_committed(mine)
        return mine

    def sync(self) -> None:
        """Commit every queued write now (before an irreversible step that relies on them)."""
        with self._cv:
            self._raise_if_broken()
            target = self._seq
        self._wait_committed(target)

    def sync_upto(self, seq: int) -> None:
        """Commit at least up to the write numbered `seq`."""
        if seq > self._committed:
            self._wait_committed(seq)

    def is_durable(self, seq: int) -> bool:
        """True once the write numbered `seq` is committed."""
        return seq <= self._committed

    def pending(self, tag: Hashable) -> int:
        """The number of the last write of `tag` not committed yet, 0 if all are."""
        return self._tag_seq.get(tag, 0)

    def abandon(self) -> List[Hashable]:
        """Forget the tags still waiting (their writes will never be committed); returns them."""
        with self._cv:
            tags = list(self._tag_seq)
            self._tag_seq = {}
            self._marks.clear()
        return tags

    def _raise_if_broken(self) -> None:
        """Called with the lock held."""
        if self._broken is not None:
            raise StateError(f"{self._name} failed: {self._broken}")

    def _wait_committed(self, target: int) -> None:
        """Group commit: one thread commits the whole queue, the others wait for its fsync."""
        with self._cv:
            while self._committed < target:
                self._raise_if_broken()
                if self._committing:
                    self._cv.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                upto = self._seq
                # The commit runs without the lock: other threads keep queueing meanwhile.
                self._cv.release()
                error: Optional[BaseException] = None
                try:
                    if batch:
                        self._commit(batch)
                except BaseException as exc:  # recorded for every waiter, then re-raised below
                    error = exc
                finally:
                    self._cv.acquire()
                    self._committing = False
                    if error is None:
                        self._committed = upto
                        self._trim(upto)
                    else:
                        self._broken = error
                    self._cv.notify_all()
                if error is not None:
                    raise StateError(f"{self._name} failed: {error}") from error

    def _trim(self, upto: int) -> None:
        """Forget the marks of writes now on disk (called with the lock held)."""
        while self._marks and self._marks[0][0] <= upto:
            seq, tags = self._marks.popleft()
            for tag in tags:
                if self._tag_seq.get(tag) == seq:
                    del self._tag_seq[tag]
                    self._on_settled(tag)
