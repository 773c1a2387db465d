"""The polling daemon of `smartpop serve`: each account at its interval, backoff on failure.

One scheduler thread sleeps in select() until the next account is due, a server in IMAP
IDLE announces mail, config.json changes (inotify), or stop() wakes it: no thread wakes on a
fixed timer while nothing is due. A due account gets a worker thread for its run (never two
for one account; the file lock also keeps a concurrent `smartpop fetch` out); at most
ACCOUNT_CONCURRENCY of them collect at the same time.

IMAP accounts with `idle` are not polled while IDLE works: after each run the worker opens
an IDLE session and hands it to the scheduler, which select()s on all of them at once (no
thread per waiting account; idlewait.IdleWaits keeps them). New mail ends the session and
starts a run. Before RFC 2177's 29 minutes a worker renews the session, and before an OAuth2
access token runs out it logs in again with a fresh one (logins.credential_for). Where the
server cannot IDLE the account is polled at its interval, and the status says why (`push`).

Quiet runs write nothing (runner, statehub.Liveness); their times are written once an hour
together with a one-line summary, and on stop. Stopping lets a worker finish the message in
hand, then QUIT, so nothing is left half done.
"""

from __future__ import annotations

import logging
import math
import selectors
import socket
import threading
import time
from typing import Callable, Dict, Optional, Set

from smartpop import heap
from smartpop.collector import logins, runner, state, statusread
from smartpop.collector.concurrency import Guards
from smartpop.collector.configwatch import ConfigWatch
from smartpop.collector.idle import IdleSession, IdleUnavailable
from smartpop.collector.idlewait import IdleWaits
from smartpop.collector.runner import run_account
from smartpop.collector.storepool import StorePool
from smartpop.config.schema import Account, Config
from smartpop.errors import SignInRequired, SmartPopError
from smartpop.paths import Paths

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0
# How often quiet runs' times are written and the summary line is logged.
SUMMARY_EVERY = state.FLUSH_EVERY
# An IDLE session the server ends sooner than this is not retried at once (no login loop).
MIN_IDLE_LIFE = 60.0
# A session that could not start (a network hiccup, a busy server) is tried again after this,
# doubling up to the account's interval: that interval may be an hour when IDLE is meant to be
# the schedule, and one failed start must not leave the mail waiting that long.
IDLE_RETRY = 60.0
IDLE = "idle"


def next_delay(interval: int, failures: int) -> float:
    """Seconds until the next poll: the interval, doubled per consecutive failure, capped."""
    if failures <= 0:
        return float(interval)
    return float(min(interval * (2 ** min(failures, 16)), max(MAX_BACKOFF, interval)))


class DaemonHandle:
    """A running daemon; stop() ends it."""

    def __init__(self, paths: Paths, config: Config, guards: Optional[Guards] = None) -> None:
        self.paths = paths
        self.config = config
        self.guards = guards if guards is not None else Guards()  # shared with the process's other runs
        self._stop = threading.Event()
        self._workers: Dict[str, threading.Thread] = {}
        self._due: Dict[str, float] = {}
        self._failures: Dict[str, int] = {}
        self._idle_failures: Dict[str, int] = {}  # IDLE starts that failed in a row, per account
        self._pushed: Set[str] = set()  # accounts whose next run is set off by an IDLE push
        self._lock = threading.Lock()
        # Bounds how many accounts collect at once (a session waiting in IDLE does not count).
        self._slots = threading.BoundedSemaphore(runner.ACCOUNT_CONCURRENCY)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._waits = IdleWaits(paths, self._selector)
        self._config_watch = ConfigWatch(paths, self._selector)
        # Open stores kept between runs: opening and closing one per poll writes to the disk.
        self._stores = StorePool(paths.state_db)
        self._quiet = 0  # runs since the last summary that found and changed nothing
        self._runs = 0
        self._summary_at = time.monotonic() + SUMMARY_EVERY
        # Called after each run that changed an account's status (serve: the alert watcher).
        self.on_change: Optional[Callable[[], None]] = None
        self._thread = threading.Thread(target=self._loop, name="smartpop-scheduler", daemon=True)

    # --- waking -----------------------------------------------------------------------------
    def wake(self) -> None:
        """Make the scheduler look now (a worker finished, a session arrived, stop)."""
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already full of wake-ups, or closed at stop: either way it wakes

    def _drain(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, OSError):
            pass

    # --- config -----------------------------------------------------------------------------
    def _reload(self) -> None:
        config = self._config_watch.load()
        if config is None:
            return
        self.config = config
        # A changed account starts afresh: its IDLE session (made with the old settings) ends.
        for name, session in list(self._waits.sessions.items()):
            if self._account(name) != session.account:
                self._waits.end(name)
                self._due[name] = 0.0

    def _account(self, name: str) -> Optional[Account]:
        for account in self.config.accounts:
            if account.name == name:
                return account
        return None

    # --- the scheduler ---------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout: Optional[float] = None
            try:
                timeout = self._look()
            except Exception:  # the scheduler must survive anything
                log.exception("collector scheduler error")
                timeout = 1.0
            if self._stop.is_set():
                break
            try:
                ready = self._selector.select(timeout)
            except (OSError, ValueError):  # a session's socket went bad under select
                log.exception("collector scheduler: select failed")
                for name in self._waits.end_broken():
                    self._due[name] = 0.0
                continue
            for key, _ in ready:
                try:
                    self._ready(key.data)
                except Exception:
                    log.exception("collector scheduler error")
        self._waits.end_all()

    def _look(self) -> Optional[float]:
        """Start what is due; return how long select() may sleep (None: until woken)."""
        if time.monotonic() >= self._config_watch.next_look():
            self._reload()
        for session in self._waits.arrivals():
            self._adopt(session)
        now = time.monotonic()
        next_at = self._summary_at
        enabled = {a.name for a in self.config.accounts if a.enabled}
        for name in [n for n in self._waits.sessions if n not in enabled]:
            self._waits.end(name)
        for account in self.config.accounts:
            if not account.enabled or self._busy(account.name):
                continue
            waiting = self._waits.sessions.get(account.name)
            if waiting is not None:
                if now >= waiting.due():
                    self._waits.take(account.name)
                    self._start(account, renew=waiting)
                else:
                    next_at = min(next_at, waiting.due())
                continue
            due = self._due.get(account.name, 0.0)
            if now >= due:
                self._start(account)
            else:
                next_at = min(next_at, due)
        if now >= self._summary_at:
            self._summarise()
            next_at = min(next_at, self._summary_at)
        next_at = min(next_at, self._config_watch.next_look())
        return None if math.isinf(next_at) else max(0.0, next_at - time.monotonic())

    def _ready(self, what: object) -> None:
        if what == "wake":
            self._drain()
        elif what == "config":
            if self._config_watch.touched():
                self._reload()
        elif isinstance(what, IdleSession):
            name = what.account.name
            news = what.news()
            if news is False:
                return  # a keep-alive ("* OK still here") or a flag change: wait on
            self._waits.end(name)
            self._due[name] = 0.0
            if news:
                self._pushed.add(name)
                return
            lived = time.monotonic() - what.started
            if lived < MIN_IDLE_LIFE:
                # A server that drops every IDLE session at once would otherwise get a login
                # (a run and a new session) in a loop: poll at the interval instead, try again then.
                self._due[name] = time.monotonic() + what.account.interval
                self._set_push(name, f"polling every {what.account.interval} s: the server ended IDLE after "
                                     f"{lived:.0f} s")
                log.info("%s: the server ended IDLE after %.0f s; polling at the interval", name, lived)
            else:
                log.info("%s: the IDLE connection ended; collecting now, then waiting in IDLE again", name)

    def _busy(self, name: str) -> bool:
        with self._lock:
            worker = self._workers.get(name)
            return worker is not None and worker.is_alive()

    def _start(self, account: Account, renew: Optional[IdleSession] = None) -> None:
        worker = threading.Thread(target=self._work, args=(account, self.config, renew),
                                  name=f"smartpop-{account.name}", daemon=True)
        with self._lock:
            self._workers[account.name] = worker
        worker.start()

    def _adopt(self, session: IdleSession) -> None:
        """Wait on a session a worker opened (or renewed)."""
        name = session.account.name
        current = self._account(name)
        if self._stop.is_set() or current is None or not current.enabled or current != session.account:
            session.close()
            self._due[name] = 0.0  # changed settings: collect with them now
            return
        if not self._waits.add(session):
            self._due[name] = 0.0
            return
        if session.mail:  # announced while it was being opened or renewed
            self._ready(session)

    def _summarise(self) -> None:
        """Hourly: write the quiet runs' times and say in one line what the hour was like."""
        with self._lock:
            quiet, runs, self._quiet, self._runs = self._quiet, self._runs, 0, 0
        self._summary_at = time.monotonic() + SUMMARY_EVERY
        try:
            statusread.flush_liveness(self.paths, self._stores.hub)
        except Exception as exc:  # the next flush (or stop) tries again
            log.warning("could not write the collector's last-checked times: %s", exc)
        if quiet:
            log.info("last hour: %d collection run(s), %d of them found nothing new; %d account(s) wait in IMAP IDLE",
                     runs, quiet, len(self._waits.sessions))

    # --- workers -----------------------------------------------------------------------------
    def _work(self, account: Account, config: Config, renew: Optional[IdleSession]) -> None:
        try:
            if renew is not None:
                self._renew(account, renew)
            else:
                self._collect(account, config)
        finally:
            with self._lock:
                if self._workers.get(account.name) is threading.current_thread():
                    del self._workers[account.name]
            self.wake()

    def _renew(self, account: Account, session: IdleSession) -> None:
        try:
            if session.needs_login():  # the token runs out: a new login with a fresh one
                session = session.relogin(logins.credential_for(self.paths, account))
            else:
                session.renew()
        except Exception as exc:  # the connection broke or the login failed: poll now, then IDLE again
            # A SignInRequired ends up in that run too, which records it and backs off; its
            # failure then keeps IDLE off until a run succeeds, so there is no login loop.
            if isinstance(exc, SignInRequired):
                self._set_push(account.name, f"polling every {account.interval} s: {exc}")
            log.info("%s: renewing IDLE failed (%s); collecting now, then waiting in IDLE again", account.name, exc)
            session.close()
            self._due[account.name] = 0.0
            return
        self._stores.hub.liveness.note(self.paths.state_db, account.name, time.time(), time.time())
        if session.mail:  # arrived while it logged in again
            session.close()
            self._pushed.add(account.name)
            self._due[account.name] = 0.0
            return
        self._hand_over(session)

    def _collect(self, account: Account, config: Config) -> None:
        failures = self._failures.get(account.name, 0)
        pushed = account.name in self._pushed
        self._pushed.discard(account.name)
        remaining, collected = -1, 0
        try:
            with self._slots:
                if self._stop.is_set():
                    return
                result = run_account(self.paths, config, account, stop=self._stop, lock_timeout=0,
                                     stores=self._stores, guards=self.guards)
            failures = 0 if (result.ok or result.skipped) else failures + 1
            remaining, collected = result.remaining, result.collected
            with self._lock:
                self._runs += 1
                self._quiet += 1 if result.quiet else 0
            if not result.quiet and self.on_change is not None:
                self.on_change()
        except Exception:
            log.exception("%s: collector run crashed", account.name)
            failures += 1
        heap.trim()  # the daemon waits with the memory of its quietest moment, not its busiest
        self._failures[account.name] = failures
        delay = next_delay(account.interval, failures)
        if failures:
            log.info("%s: next try in %d s (failure %d in a row)", account.name, delay, failures)
        started = time.monotonic()
        self._due[account.name] = started + delay
        if not (account.idle and account.protocol == "imap"):
            if self._waits.push(account.name) is not None:
                self._set_push(account.name, None)  # IDLE was switched off for this account
            return
        if failures or self._stop.is_set():
            return
        if pushed and collected == 0:
            # The server announced mail this run could not take (say, after a failed EXPUNGE):
            # waiting in IDLE again would bring the same announcement at once, so poll instead.
            return
        try:
            session = IdleSession.open(account, known=remaining, credential=logins.credential_for(self.paths, account))
        except (IdleUnavailable, SignInRequired) as exc:
            self._set_push(account.name, f"polling every {account.interval} s: {exc}")
            return
        except (SmartPopError, OSError) as exc:
            tries = self._idle_failures.get(account.name, 0) + 1
            self._idle_failures[account.name] = tries
            retry = min(float(delay), IDLE_RETRY * 2 ** min(tries - 1, 10))
            self._due[account.name] = started + retry
            log.info("%s: IDLE not possible this round (%s); collecting and trying IDLE again in %.0f s",
                     account.name, exc, retry)
            self._set_push(account.name, f"polling every {account.interval} s: IDLE could not start ({exc})")
            return
        self._idle_failures.pop(account.name, None)
        if session.mail:
            session.close()
            self._due[account.name] = 0.0
            self._pushed.add(account.name)
            return
        self._set_push(account.name, IDLE)
        self._hand_over(session)

    def _hand_over(self, session: IdleSession) -> None:
        self._waits.hand_over(session)
        self.wake()

    def _set_push(self, name: str, push: Optional[str]) -> None:
        """Record how the account gets its mail, when that changes (a write only then)."""
        self._waits.set_push(name, push)

    # --- life cycle -----------------------------------------------------------------------
    def start(self) -> DaemonHandle:
        """Start the scheduler thread."""
        self._thread.start()
        log.info("collector daemon started")
        return self

    def stop(self, timeout: float = 60.0) -> bool:
        """Ask every worker to stop after its current message; True if all ended within `timeout`."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._waits.end_all()
        alive = [w.name for w in workers if w.is_alive()] + ([self._thread.name] if self._thread.is_alive() else [])
        self._finish()
        if alive:
            log.warning("collector threads still running after %.0f s: %s", timeout, ", ".join(alive))
        else:
            log.info("collector daemon stopped")
        return not alive

    def _finish(self) -> None:
        """Write what is only in memory, then let go of the store."""
        try:
            statusread.flush_liveness(self.paths, self._stores.hub)
            self._waits.clear_push()
        except Exception as exc:
            log.warning("could not write the collector's last-checked times: %s", exc)
        self._stores.close()
        self._config_watch.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def start(paths: Paths, config: Config, guards: Optional[Guards] = None) -> DaemonHandle:
    """Create and start a daemon."""
    return DaemonHandle(paths, config, guards).start()
