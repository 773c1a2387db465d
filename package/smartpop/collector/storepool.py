"""Stores kept open between the runs of one process (the daemon)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import List

from smartpop.collector.state import Store
from smartpop.collector.statehub import HUB, StateHub


class StorePool:
    """Stores kept open between the runs of one process (the daemon), so a quiet poll writes nothing.

    Opening a store is a disk write: SQLite running as root chowns the WAL file it opens, and
    the last connection to close checkpoints the WAL and deletes it. A store that failed is
    closed, never handed out again: the next run opens a fresh one.
    """

    def __init__(self, path: Path, hub: StateHub = HUB) -> None:
        self.path = path
        self.hub = hub  # the stores' shared state; the daemon notes quiet runs' times there
        self._lock = threading.Lock()
        self._free: List[Store] = []
        self._closed = False

    def acquire(self) -> Store:
        """An open store for one run (a kept one if free)."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return Store(self.path, self.hub)

    def release(self, store: Store) -> None:
        """Commit what the run queued and keep the store for the next run; raises StateError."""
        try:
            store.sync()
            store.shrink()
        except BaseException:
            with contextlib.suppress(Exception):
                store.close()
            raise
        with self._lock:
            if not self._closed:
                self._free.append(store)
                return
        store.close()

    def close(self) -> None:
        """Close every kept store."""
        with self._lock:
            free, self._free, self._closed = self._free, [], True
        for store in free:
            with contextlib.suppress(Exception):
                store.close()
