"""`smartpop fetch` and `smartpop check` (exit codes: 0 ok, 1 some account failed, 2 config)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Optional

from smartpop.collector import delivery, service
from smartpop.collector.concurrency import Guards
from smartpop.config import store
from smartpop.errors import SignInRequired, TemporaryError
from smartpop.paths import Paths

log = logging.getLogger(__name__)


def _stop_on_sigterm(stop: threading.Event) -> None:
    """SIGTERM/SIGINT finish the message in hand, then QUIT: nothing half done."""
    def handler(signum: int, frame: Optional[FrameType]) -> None:
        # WARNING: a run cut short leaves mail on the server, and the terminal shows warnings only.
        log.warning("signal %d received; stopping after the current message", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_fetch(paths: Paths, args: argparse.Namespace, guards: Optional[Guards] = None) -> int:
    """One collection pass; exit 1 if any account failed (its mail stays on the server).

    `guards`: this process's (concurrency.py), built here unless given (the crash tests give theirs).
    """
    config = store.load(paths)
    if not getattr(args, "account", None) and not any(a.enabled for a in config.accounts):
        # Not an error (exit 0): an empty or paused setup is valid, and a scheduled fetch must
        # not report a failure for it. But say so, instead of a silent success.
        what = "no accounts configured" if not config.accounts else "every account is disabled"
        print(f"{what}: nothing to fetch. Add or enable an account on the app's Accounts page "
              "(or in config.json, docs/CONFIG.md)")
        return 0
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        _stop_on_sigterm(stop)
    summary = service.fetch_all(paths, config, getattr(args, "account", None), stop=stop,
                                guards=guards if guards is not None else Guards())
    for line in summary.lines():
        print(line)
    return 0 if summary.ok else 1


def cmd_check(paths: Paths, args: argparse.Namespace) -> int:
    """Validate the config, log in to every enabled account, and reach the delivery target."""
    config = store.load(paths)
    print("configuration: ok")
    failed = 0
    for account in config.accounts:
        if not account.enabled:
            print(f"{account.name}: disabled, not tested")
            continue
        try:
            print(f"{account.name}: ok: {service.test_connection(paths, account)}")
        except SignInRequired as exc:
            failed += 1
            print(f"{account.name}: {exc}")
            from smartpop import alerts

            alerts.sign_in_needed(paths, config, account.name, exc)
        except TemporaryError as exc:
            failed += 1
            print(f"{account.name}: FAILED: {exc}")
    target = f"{config.delivery.host}:{config.delivery.port}"
    try:
        print(f"delivery {target}: ok: {delivery.probe(config.delivery.host, config.delivery.port)}")
    except TemporaryError as exc:
        failed += 1
        print(f"delivery {target}: FAILED: {exc}")
    return 1 if failed else 0
