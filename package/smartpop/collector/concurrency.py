"""What the account runs of one process share while their threads hand mail over.

`Guards` bundles the hand-over window (HandOver), the per-digest order (DigestLocks) and the
step seam the crash tests kill at (`checkpoint`). A process builds one at its entry and passes
it down to every run_account(), because the runs that must see each other may all run in one
process: a `fetch` pass's accounts (commands.cmd_fetch), and in `serve` the daemon's accounts
and a "fetch now" from the web UI (cli builds them, the daemon's handle hands them to the app).
Nothing here is a module global: a test that needs its own guards makes them.
`Pending` bounds how many spooled messages one run has in its delivery workers.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List


def _no_checkpoint(step: str) -> None:
    """Production: step boundaries are just boundaries."""


class HandOver:
    """Counts threads between a durable 'sending' entry and their dot leaving the socket.

    A process that dies inside that window leaves a 'sending' copy that MailPlus may or may
    not have: the next run sends it again, marked (a possible duplicate, never a loss).
    `quiet()` lets the step-boundary crash tests' hook kill only while no thread is inside
    it, so that a kill at a step boundary of one thread is not an arbitrary point in another;
    the random-kill tests kill anywhere.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._inside = 0

    def enter(self) -> None:
        """A thread starts its durable note + dot."""
        with self._cv:
            self._inside += 1

    def leave(self) -> None:
        """The dot is written (or the attempt failed)."""
        with self._cv:
            self._inside -= 1
            self._cv.notify_all()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Hold while no thread is inside the window (nobody enters meanwhile)."""
        with self._cv:
            self._cv.wait_for(lambda: self._inside == 0)
            yield


class DigestLocks:
    """Places copies with the same digest one after another.

    One multidrop message may sit in several provider mailboxes polled at once: the second
    copy must see the first one's recipients in the ledger, not race it.
    """

    def __init__(self) -> None:
        self._locks: Dict[str, List[Any]] = {}  # digest -> [lock, holders and waiters]
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def one_at_a_time(self, digest: str) -> Iterator[None]:
        """Hold the lock of `digest` (none for '': no identity, so no other copy to wait for)."""
        if not digest:
            yield
            return
        with self._guard:
            entry = self._locks.setdefault(digest, [threading.Lock(), 0])
            entry[1] += 1
        entry[0].acquire()
        try:
            yield
        finally:
            entry[0].release()
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[digest]


class Guards:
    """The hand-over window, the per-digest order and the step seam of the runs that share them.

    `checkpoint` is called at each step boundary with its name (after_retr, after_note,
    after_data, after_record, after_dele, before_quit); the crash tests replace it with a
    hook that SIGKILLs the process there (tests/support/crashrun.py). In production it does nothing.
    """

    def __init__(self, checkpoint: Callable[[str], None] = _no_checkpoint) -> None:
        self.handover = HandOver()
        self.digests = DigestLocks()
        self.checkpoint = checkpoint


class Pending:
    """Counts messages handed to the delivery workers and not finished; the provider thread waits on it.

    A counter and one condition instead of concurrent.futures.wait(), which hooked a waiter
    into every future in hand for each message.
    """

    def __init__(self) -> None:
        self.count = 0
        self._cv = threading.Condition()
        self._below = 0  # the waiting thread wants count < this (0: nobody waits)

    def submit(self, pool: ThreadPoolExecutor, fn: Callable[..., bool], *args: Any) -> Future[bool]:  # novermin
        """pool.submit(fn, *args), counted until it is done."""
        with self._cv:
            self.count += 1
        future = pool.submit(fn, *args)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[bool]) -> None:  # novermin
        with self._cv:
            self.count -= 1
            if self.count < self._below:
                self._below = 0
                self._cv.notify()

    def wait_below(self, limit: int) -> None:
        """Block until fewer than `limit` messages are pending."""
        with self._cv:
            while self.count >= limit:
                self._below = limit
                self._cv.wait()
