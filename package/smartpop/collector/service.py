"""The collector's library API for the CLI, the web UI and the daemon."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from smartpop.collector import headers, logins, recipients, runner, statusread
from smartpop.collector.concurrency import Guards
from smartpop.collector.policy import policy_for
from smartpop.collector.runner import AccountResult, run_account
from smartpop.collector.sources import open_source
from smartpop.config.schema import Account, Config
from smartpop.paths import Paths

if TYPE_CHECKING:  # the daemon (scheduler, IDLE, inotify) is imported by `serve` only, not by every `fetch`
    from smartpop.collector.daemon import DaemonHandle

log = logging.getLogger(__name__)

RoutingDecision = recipients.RoutingDecision

# A scheduled `fetch` waits this long for a daemon run on the same account, then skips it.
FETCH_LOCK_WAIT = 120.0


@dataclass
class FetchSummary:
    """Per-account results of one pass."""

    results: Dict[str, AccountResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no account failed (a skipped, busy account is not a failure)."""
        return all(r.ok for r in self.results.values())

    def lines(self) -> List[str]:
        """One human-readable line per account."""
        out = []
        for name, r in self.results.items():
            if r.skipped:
                out.append(f"{name}: skipped, another SmartPop run is collecting this mailbox")
            elif r.sign_in:
                out.append(f"{name}: {r.error}")
            elif r.error and not r.collected:
                out.append(f"{name}: FAILED: {r.error}")
            else:
                line = f"{name}: {r.collected} collected, {r.fallback} to fallback, {r.waiting} waiting"
                out.append(line + (f"; problem: {r.error}" if r.error else ""))
        return out


def fetch_all(paths: Paths, config: Config, account: Optional[str] = None,
              progress: Optional[Callable[[Dict[str, Any]], None]] = None, *,
              stop: Optional[threading.Event] = None, lock_timeout: float = FETCH_LOCK_WAIT,
              guards: Optional[Guards] = None) -> FetchSummary:
    """One collection pass over every enabled account (or just `account`, enabled or not).

    `guards` are shared with every other run of this process (concurrency.py); without them
    the pass's accounts share guards of their own.
    """
    shared = guards if guards is not None else Guards()
    accounts = [config.account(account)] if account else [a for a in config.accounts if a.enabled]
    summary = FetchSummary()

    def one(item: Account) -> Optional[AccountResult]:
        if stop is not None and stop.is_set():
            return None  # stopping: accounts not started yet are left for the next pass
        return run_account(paths, config, item, progress, stop, lock_timeout, guards=shared)

    workers = max(1, min(runner.ACCOUNT_CONCURRENCY, len(accounts)))
    if workers == 1:
        results = [one(item) for item in accounts]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="smartpop-account") as pool:
            results = list(pool.map(one, accounts))  # in config order, whatever finished first
    for item, result in zip(accounts, results):
        if result is not None:
            summary.results[item.name] = result
    try:
        # A pass by hand or from Task Scheduler ends here: its quiet runs' times are written now.
        statusread.flush_liveness(paths)
    except Exception as exc:  # the runs' outcomes are in; only "last checked" is not
        log.warning("could not write the last-checked times: %s", exc)
    return summary


def test_connection(paths: Paths, account: Account, timeout: float = 15.0) -> str:
    """Log in, count the messages, log out without changing anything; raise ConnectError/AuthError/SignInRequired."""
    source = open_source(account, timeout, logins.credential_for(paths, account))
    try:
        count = len(source.list())
        greeting = headers.safe_header_text(source.greeting, 120)
    finally:
        source.abort()
    folder = f", folder {account.folder}" if account.protocol == "imap" else ""
    return f"{account.protocol.upper()} {account.host}:{account.port}: {greeting or 'connected'}; " \
           f"{count} message(s) waiting{folder}"


def explain_routing(config: Config, account: Account, raw_headers: bytes, loop_key: bytes = b"") -> RoutingDecision:
    """Where a message with these headers would go, and which rule decided (pure).

    Without `loop_key` (loopkey.load_or_create) no loop marker verifies: the tester then
    reports a genuine marker as one this installation did not write.
    """
    header, _ = headers.split_header(raw_headers)
    return recipients.decide(headers.parse_fields(header), policy_for(config, account, loop_key))


def start_daemon(paths: Paths, config: Config, guards: Optional[Guards] = None) -> DaemonHandle:
    """Start the polling daemon in background threads; call .stop(timeout) to end it.

    Its runs share `guards` (its handle's .guards; new ones if not given) with the process's other runs.
    """
    from smartpop.collector.daemon import start

    return start(paths, config, guards)


__all__ = ["FetchSummary", "RoutingDecision", "explain_routing", "fetch_all", "start_daemon",
           "test_connection"]
