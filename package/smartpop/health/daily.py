"""The daily health run inside `smartpop serve`, driven by the alert watcher's wake-ups (no timer of its own).

The alert watcher (alerts.AlertWatcher) wakes when the collector pokes it and at its long
interval; each time it asks `DailyHealth.maybe_start()`, which compares the clock with a due
time held in memory and, once a day, runs the checks in a thread of its own (the probes can
take minutes; the watcher must not wait). Nothing is read or written while nothing is due; the
run writes DATA/health.json and raises an alert for each check that turned into a problem.
This module imports only the standard library until a run is due: `serve`'s idle memory stays.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import Callable, Optional

from smartpop.paths import Paths

log = logging.getLogger(__name__)

DAY = 86400.0
# Without any report yet, the first run waits this long after `serve` started: not at every
# boot or restart, and never inside a short-lived test or benchmark of `serve`.
FIRST_DELAY = 3600.0


def last_run(paths: Paths) -> Optional[float]:
    """When the stored report ran (seconds since the epoch), or None."""
    try:
        stamp = json.loads(paths.health_file.read_text(encoding="utf-8"))["checked_at"]
        return datetime.fromisoformat(str(stamp)).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_checks(paths: Paths) -> None:
    from smartpop.config import store
    from smartpop.health import service

    report = service.run_checks(paths, store.load(paths))
    if report is not None:
        log.info("daily mail health check: %s (%d findings, %.1f s)", report["status"], len(report["findings"]),
                 report["duration_seconds"])


class DailyHealth:
    """Decides when the daily check is due and runs it in its own thread."""

    def __init__(self, paths: Paths, started: Optional[float] = None,
                 run: Optional[Callable[[Paths], None]] = None) -> None:
        self.paths = paths
        self._run = run or _run_checks
        self._due: Optional[float] = None
        self._started = time.time() if started is None else started
        self._thread: Optional[threading.Thread] = None

    def due_at(self) -> float:
        """When the next run is due: a day after the stored report, else FIRST_DELAY after start."""
        if self._due is None:
            last = last_run(self.paths)
            self._due = last + DAY if last is not None else self._started + FIRST_DELAY
        return self._due

    def maybe_start(self, now: Optional[float] = None) -> bool:
        """Start the run when it is due and none is running; True when one was started."""
        moment = time.time() if now is None else now
        if moment < self.due_at():
            return False
        # A check run from the page or the CLI since then moved the due time.
        self._due = None
        if moment < self.due_at():
            return False
        if self._thread is not None and self._thread.is_alive():
            return False
        self._due = moment + DAY
        self._thread = threading.Thread(target=self._guarded, name="health-daily", daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float) -> None:
        """Wait for a started run (tests, shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _guarded(self) -> None:
        try:
            self._run(self.paths)
        except Exception:
            log.exception("daily mail health check failed")
