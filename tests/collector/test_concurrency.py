"""What the account runs of one process share: hand-over window, per-digest order, step seam (no servers)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

from smartpop.collector.concurrency import PROCESS, DigestLocks, Guards, HandOver, Pending


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
    mine.checkpoint("after_note")
    PROCESS.checkpoint("after_note")  # production: a boundary is just a boundary
    assert seen == ["after_note"]
    assert mine.handover is not PROCESS.handover and mine.digests is not PROCESS.digests


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
