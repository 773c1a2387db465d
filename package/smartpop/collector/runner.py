"""One collection pass for one account: retrieve -> deliver (250) -> record -> delete.

Order per message (docs/CONTRACTS.md, "Collection"; docs/COLLECTION.md):
1. skip what the store marks done (delete it now if due), else RETR/FETCH into the spool;
2. route; drop recipients already placed (this message's journal) or already served
   (the multidrop ledger);
3. note the copies as 'sending' (durable), send the DATA dot, then record the reply;
   5xx copies go to the fallback recipient in a second transaction; 4xx stay pending;
   a copy whose reply never came (or whose run died) is 'doubt': sent again with an
   X-SmartPop-Redelivered header, never taken for delivered (docs/COLLECTION.md, "Doubt");
4. once every recipient has a recorded 250, mark the message done; commit (durable), then
   DELE / \\Deleted;
5. QUIT / UID EXPUNGE commits the deletions at the end.

This module runs one account's pass under its lock and turns whatever happens into an
AccountResult. The pass over the mailbox is mailbox.py's; steps 2-4 for one message are
placer.py's (their rules placement.py's); what the runs of a process share, concurrency.py's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Optional

from smartpop import fsutil
from smartpop.collector import logins, spool
from smartpop.collector.concurrency import Guards
from smartpop.collector.mailbox import AccountResult, AccountRun, Progress
from smartpop.collector.source import Source
from smartpop.collector.sources import open_source
from smartpop.collector.state import Store
from smartpop.collector.storepool import StorePool
from smartpop.config.schema import Account, Config
from smartpop.errors import LockBusy, ProtocolError, SignInRequired, SmartPopError, StateError
from smartpop.paths import Paths

log = logging.getLogger(__name__)

NETWORK_TIMEOUT = 120.0
# Accounts polled at once by one fetch pass or the daemon. Most polls are waits on the
# network (TLS handshake, login, UIDL), so a few in parallel make 200 accounts fast while
# a 2-core NAS stays responsive; each account still has its own file lock.
ACCOUNT_CONCURRENCY = 4


def run_account(paths: Paths, config: Config, account: Account, progress: Optional[Progress] = None,
                stop: Optional[threading.Event] = None, lock_timeout: float = 0,
                stores: Optional[StorePool] = None, *, guards: Guards) -> AccountResult:
    """One pass over `account` under its lock; errors end up in the result, never raised.

    With `stores` (the daemon's) the state store stays open after the run for the next one.
    `guards` are shared with the other runs that may hold a copy of the same message.
    """
    spool.make_spool_dir(paths.spool)
    paths.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with fsutil.locked(fsutil.lock_path(paths, account.name), timeout=lock_timeout):
            return _run_locked(paths, config, account, progress, stop, stores, guards)
    except LockBusy:
        log.info("%s: another SmartPop run is working on this mailbox; skipped", account.name)
        return AccountResult(account.name, skipped=True)


def _state_failed(paths: Paths, config: Config, account: Account, exc: StateError) -> None:
    """Tell the admin at once: with the state unwritable, status.json and the store cannot say it."""
    log.error("%s: the collection state could not be written (%s); this run stopped before deleting anything "
              "on the server, its mail stays there and is delivered once space is free", account.name, exc)
    try:
        from smartpop import alerts

        alerts.notify(paths, config, "state_write", f"SmartPop cannot write its state ({account.name})",
                      f"SmartPop stopped collecting {account.name} because it cannot write its state in {paths.data} "
                      f"({exc}). The volume may be full. No mail is lost: it stays at the provider and is "
                      "collected once the problem is fixed.", key=account.name)
    except Exception:  # an alert channel must never turn a stopped run into a crash
        log.exception("%s: alert about the state failure could not be sent", account.name)


def _run_locked(paths: Paths, config: Config, account: Account, progress: Optional[Progress],
                stop: Optional[threading.Event], stores: Optional[StorePool], guards: Guards) -> AccountResult:
    try:
        store = stores.acquire() if stores is not None else Store(paths.state_db)
        store.run_started(account.name)
    except StateError as exc:
        _state_failed(paths, config, account, exc)
        return AccountResult(account.name, ok=False, error=str(exc))
    run = AccountRun(paths, config, account, store, progress, stop, guards, NETWORK_TIMEOUT)
    _collect(run)
    outcome = _close_store(run, stores)
    result = run.result
    run.show_progress("done", result.collected, result.collected + (result.waiting or 0))
    # A run that found nothing and changed nothing is not logged: on a NAS whose disks
    # hibernate, a line per poll would wake them (the daemon logs an hourly summary instead).
    quiet = outcome != "changed" and not (result.collected or result.fallback or result.duplicates
                                          or result.redelivered or result.deleted or result.error or result.problems)
    result.quiet = quiet
    log.log(logging.DEBUG if quiet else logging.INFO,
            "%s: %d collected (%d to fallback, %d duplicate copies skipped, %d copies in doubt delivered again), "
            "%d deleted on the server, %s waiting", account.name, result.collected, result.fallback, result.duplicates,
            result.redelivered, result.deleted, "unknown" if result.waiting is None else result.waiting)
    return result


def _collect(run: AccountRun) -> None:
    """Recover, connect, run, QUIT; whatever goes wrong ends up in run.result, never raised."""
    paths, config, account, result = run.paths, run.config, run.account, run.result
    source: Optional[Source] = None
    try:
        run.recover()
        run.show_progress("connect", 0, 0)
        source = open_source(account, NETWORK_TIMEOUT, logins.credential_for(paths, account))
        try:
            run.run(source)
        finally:
            run.close_sessions()
        run.guards.checkpoint("before_quit")
        current, source = source, None
        for ref, why in current.finish():
            # The record says done, so the next run deletes it again.
            result.deleted -= 1
            result.remaining += 1
            result.problems.append(f"DELE {ref} refused: {why}")
    except StateError as exc:
        # Nothing more is deleted on the server: a DELE only follows a durable record.
        result.ok, result.error = False, str(exc)
        _state_failed(paths, config, account, exc)
    except SignInRequired as exc:  # no login possible until the admin signs in; the daemon backs off
        result.ok, result.error, result.sign_in = False, str(exc), True
        from smartpop import alerts

        alerts.sign_in_needed(paths, config, account.name, exc)
    except SmartPopError as exc:  # TemporaryError included: the mail waits for the next run
        result.ok, result.error = False, str(exc)
    except Exception as exc:  # one broken account must not stop the others
        log.exception("%s: unexpected error", account.name)
        result.ok, result.error = False, f"unexpected error: {exc.__class__.__name__}: {exc}"
    finally:
        if source is not None:
            source.abort()
    if result.error:
        log.error("%s: %s", account.name, result.error)
    elif result.problems:
        result.ok = False
        result.error = f"{len(result.problems)} message(s) could not be placed yet; last: {result.problems[-1]}"


def _close_store(run: AccountRun, stores: Optional[StorePool]) -> str:
    """Record the run's outcome and give the store back; run_finished's answer ('changed' if unknown)."""
    store, result, account = run.store, run.result, run.account
    outcome = "changed"
    try:
        outcome = store.run_finished(account.name, result.ok, result.collected, result.fallback, result.error,
                                     result.waiting)
        if stores is not None:
            stores.release(store)
        else:
            store.close()
    except StateError as exc:
        # The state could not be written (full volume, I/O error): the mail stays on the server.
        if result.ok:
            result.ok, result.error = False, str(exc)
            _state_failed(run.paths, run.config, account, exc)
        with contextlib.suppress(Exception):
            store.close()  # closes both connections even when its final commit fails
    return outcome


__all__ = ["AccountResult", "ProtocolError", "run_account"]
