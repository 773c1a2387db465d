"""The polling daemon of `smartpop serve`: each account at its interval, backoff on failure.

IMAP accounts with `idle` wait in IMAP IDLE between runs and collect as soon as the server
announces new mail (at the latest after the interval).

One scheduler thread starts one worker per due account (never two for one account; the
file lock also keeps a concurrent `smartpop fetch` out); at most ACCOUNT_CONCURRENCY of
them collect at the same time. The config is re-read when
config.json changes, so accounts edited in the UI take effect without a restart.
Stopping lets a worker finish the message in hand, then QUIT, so nothing is left half done.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Optional, Set

from smartpop.collector import runner
from smartpop.collector.idle import wait_for_mail
from smartpop.collector.runner import run_account
from smartpop.config import store
from smartpop.config.schema import Account, Config
from smartpop.errors import ConfigError
from smartpop.paths import Paths

log = logging.getLogger(__name__)

TICK = 1.0
MAX_BACKOFF = 3600.0


def next_delay(interval: int, failures: int) -> float:
    """Seconds until the next poll: the interval, doubled per consecutive failure, capped."""
    if failures <= 0:
        return float(interval)
    return float(min(interval * (2 ** min(failures, 16)), max(MAX_BACKOFF, interval)))


class DaemonHandle:
    """A running daemon; stop() ends it."""

    def __init__(self, paths: Paths, config: Config) -> None:
        self.paths = paths
        self.config = config
        self._stop = threading.Event()
        # Wakes the scheduler before its next tick: IDLE announced mail, or stop() was called.
        self._wake = threading.Event()
        self._workers: Dict[str, threading.Thread] = {}
        self._due: Dict[str, float] = {}
        self._failures: Dict[str, int] = {}
        self._pushed: Set[str] = set()  # accounts whose next run is set off by an IDLE push
        self._lock = threading.Lock()
        # Bounds how many accounts collect at once (a worker waiting in IDLE does not count).
        self._slots = threading.BoundedSemaphore(runner.ACCOUNT_CONCURRENCY)
        self._config_mtime = self._mtime()
        self._thread = threading.Thread(target=self._loop, name="smartpop-scheduler", daemon=True)

    def _mtime(self) -> Optional[float]:
        try:
            return self.paths.config.stat().st_mtime
        except OSError:
            return None

    def _reload(self) -> None:
        mtime = self._mtime()
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            self.config = store.load(self.paths)
            log.info("configuration changed; the collector uses the new settings")
        except ConfigError as exc:
            log.error("configuration changed but is invalid, keeping the previous one: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Cleared before the look, not after the wait: a wake-up that comes during the
            # look then ends the next wait at once instead of being lost.
            self._wake.clear()
            try:
                self._reload()
                now = time.monotonic()
                for account in self.config.accounts:
                    if not account.enabled:
                        continue
                    with self._lock:
                        busy = account.name in self._workers and self._workers[account.name].is_alive()
                    if busy or now < self._due.get(account.name, 0.0):
                        continue
                    worker = threading.Thread(target=self._work, args=(account, self.config),
                                              name=f"smartpop-{account.name}", daemon=True)
                    with self._lock:
                        self._workers[account.name] = worker
                    worker.start()
            except Exception:  # the scheduler must survive anything
                log.exception("collector scheduler error")
            self._wake.wait(TICK)

    def _work(self, account: Account, config: Config) -> None:
        failures = self._failures.get(account.name, 0)
        pushed = account.name in self._pushed
        self._pushed.discard(account.name)
        remaining = -1
        collected = 0
        try:
            with self._slots:
                if self._stop.is_set():
                    return
                result = run_account(self.paths, config, account, stop=self._stop, lock_timeout=0)
            failures = 0 if (result.ok or result.skipped) else failures + 1
            remaining = result.remaining
            collected = result.collected
        except Exception:
            log.exception("%s: collector run crashed", account.name)
            failures += 1
        self._failures[account.name] = failures
        delay = next_delay(account.interval, failures)
        if failures:
            log.info("%s: next try in %d s (failure %d in a row)", account.name, delay, failures)
        started = time.monotonic()
        if account.idle and account.protocol == "imap" and not failures and not self._stop.is_set():
            # Push: this worker waits in IDLE (the scheduler starts no second one meanwhile).
            if wait_for_mail(account, delay, self._stop, known=remaining):
                delay = 0.0
        self._due[account.name] = started + delay
        if delay == 0.0 and not (pushed and collected == 0):
            # Pushed mail: collect now, not at the scheduler's next tick (up to TICK later,
            # which was most of the push latency). This thread is done with the account, so
            # it leaves the busy list before the scheduler looks again. If the last pushed run
            # found nothing to collect, the server announces mail nobody can take (say, after
            # a failed EXPUNGE): then the tick decides, so that is no busy loop.
            self._pushed.add(account.name)
            with self._lock:
                if self._workers.get(account.name) is threading.current_thread():
                    del self._workers[account.name]
            self._wake.set()

    def start(self) -> DaemonHandle:
        """Start the scheduler thread."""
        self._thread.start()
        log.info("collector daemon started")
        return self

    def stop(self, timeout: float = 60.0) -> bool:
        """Ask every worker to stop after its current message; True if all ended within `timeout`."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        alive = [w.name for w in workers if w.is_alive()] + ([self._thread.name] if self._thread.is_alive() else [])
        if alive:
            log.warning("collector threads still running after %.0f s: %s", timeout, ", ".join(alive))
        else:
            log.info("collector daemon stopped")
        return not alive


def start(paths: Paths, config: Config) -> DaemonHandle:
    """Create and start a daemon."""
    return DaemonHandle(paths, config).start()
