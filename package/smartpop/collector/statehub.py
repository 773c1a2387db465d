"""What the state stores of one process share, owned by one StateHub that lives as long as the process.

- ledger: which stores hold ledger rows of a digest not committed yet. A duplicate check in
  any store (another account, another file) commits them first, or it would miss them.
- prunes: when the age-based clean-up last ran per store file and account (at most hourly).
- liveness: "last checked" of quiet runs, kept in memory instead of written (issue 14).
- readers: read-only connections kept open for the status reads of `serve`.

HUB is the process's hub: Store and StorePool take it unless given another (a test's own), and
the status reads of the web UI find the daemon's quiet-run times there, in the same process.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Set, Tuple

# Read-only connections kept at most: a process reading many stores (tests) stays bounded.
KEPT_READERS = 4


class LedgerHolder(Protocol):
    """A store that may hold queued ledger rows."""

    def sync_ledger(self, digest: str) -> None:
        """Commit the queued ledger rows of `digest`."""


class QueuedLedger:
    """Digests with ledger rows queued (not committed yet) in some store of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: Dict[str, Set[LedgerHolder]] = {}

    def add(self, digest: str, store: LedgerHolder) -> None:
        """`store` queued a ledger row of `digest`."""
        with self._lock:
            self._holders.setdefault(digest, set()).add(store)

    def discard(self, digests: List[str], store: LedgerHolder) -> None:
        """`store` holds no queued ledger row of `digests` any more (committed, or the store closed)."""
        with self._lock:
            for digest in digests:
                holders = self._holders.get(digest)
                if holders is not None:
                    holders.discard(store)
                    if not holders:
                        del self._holders[digest]

    def commit(self, digest: str) -> None:
        """Commit every queued ledger row of `digest`, in whichever store holds it."""
        with self._lock:
            holders = list(self._holders.get(digest, ()))
        for store in holders:  # without the lock: a commit waits for the disk
            store.sync_ledger(digest)


class PruneTimes:
    """When the age-based clean-up last ran, per store file and account."""

    def __init__(self) -> None:
        self._times: Dict[Tuple[str, str], float] = {}

    def last(self, db: Path, account: str) -> Optional[float]:
        """The time of the last clean-up of `account` in store `db` by this process, if any."""
        return self._times.get((str(db), account))

    def note(self, db: Path, account: str, at: float) -> None:
        """The clean-up of `account` in store `db` ran at `at`."""
        self._times[(str(db), account)] = at


class Liveness:
    """When each account was last checked, for runs that changed nothing else (not on disk yet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: Dict[Tuple[str, str], Tuple[float, Optional[float]]] = {}

    def note(self, db: Path, account: str, last_run: float, last_success: Optional[float]) -> None:
        """Remember a quiet run's times (a success time survives a later failed run)."""
        with self._lock:
            previous = self._times.get((str(db), account))
            if last_success is None and previous is not None:
                last_success = previous[1]
            self._times[(str(db), account)] = (last_run, last_success)

    def get(self, db: Path, account: str) -> Optional[Tuple[float, Optional[float]]]:
        """The unwritten (last_run, last_success) of `account`, if any."""
        with self._lock:
            return self._times.get((str(db), account))

    def take(self, db: Path, account: Optional[str] = None) -> Dict[str, Tuple[float, Optional[float]]]:
        """Remove and return the unwritten times of one account (or all) of store `db`."""
        with self._lock:
            keys = [k for k in self._times if k[0] == str(db) and (account is None or k[1] == account)]
            return {k[1]: self._times.pop(k) for k in keys}


Work = Callable[[sqlite3.Connection], List[Any]]


class KeptReaders:
    """Read-only connections kept open per store, for the status reads of `serve`.

    Opening a connection is a write: its first read transaction claims a read mark in the
    memory-mapped -shm file (and SQLite running as root chowns the WAL). `serve` reads the
    status for the alert watcher and every overview, so it keeps one connection per store
    (reopened when the file is replaced).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Dict[str, Tuple[sqlite3.Connection, int]] = {}

    def read(self, db: Path, work: Work) -> List[Any]:
        """Run `work` on the kept read-only connection of `db`."""
        with self._lock:
            inode = db.stat().st_ino
            kept = self._open.get(str(db))
            if kept is not None and kept[1] != inode:
                kept[0].close()
                kept = None
            if kept is None:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10, check_same_thread=False)
                while len(self._open) >= KEPT_READERS:
                    oldest = next(iter(self._open))
                    self._open.pop(oldest)[0].close()
                kept = self._open[str(db)] = (conn, inode)
            try:
                return work(kept[0])
            except sqlite3.Error:
                kept[0].close()
                del self._open[str(db)]
                raise


class StateHub:
    """The cross-store state of one process (see the module docstring)."""

    def __init__(self) -> None:
        self.ledger = QueuedLedger()
        self.prunes = PruneTimes()
        self.liveness = Liveness()
        self.readers = KeptReaders()


HUB = StateHub()
