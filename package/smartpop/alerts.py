"""Alerts for the admin outside the app: DSM desktop notification, e-mail via MailPlus, webhook.

`notify()` is the one entry point for every component (collector, relay, the watcher below).
Each (kind, key) pair is rate-limited by `alerts.repeat_minutes`, remembered in DATA so that a
restart does not re-send. `AlertWatcher` runs inside `smartpop serve` and raises the three
standing alerts from the status report: an account failing for `failing_minutes`, mail that
went to the fallback, relay drift, and a root task that still carries an older version's hash.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import os
import shutil
import smtplib
import subprocess
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from smartpop import fsutil
from smartpop.config.schema import Config
from smartpop.errors import LockBusy, SignInRequired
from smartpop.health.daily import DailyHealth
from smartpop.log import redact
from smartpop.paths import Paths

log = logging.getLogger(__name__)

APP_ID = "SYNO.SDS._ThirdParty.App.SmartPop"
SYNODSMNOTIFY = "/usr/syno/bin/synodsmnotify"
CHANNELS = ["dsm", "email", "webhook"]
KINDS = ["account_failing", "fallback", "relay_drift", "relay_task", "state_write", "health", "sign_in", "test"]
NOT_AVAILABLE = "not available on this system"
NOT_CONFIGURED = "not configured"
_thread_lock = threading.Lock()


@contextlib.contextmanager
def _state_lock(paths: Paths) -> Iterator[None]:
    """Serialise alert-state updates between threads and between processes (daemon, `fetch`)."""
    with _thread_lock:
        paths.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        with fsutil.locked(paths.data / "alerts-state.lock", timeout=30):
            yield


def _state_file(paths: Paths) -> Path:
    return paths.data / "alerts-state.json"


def _read_state(paths: Paths) -> Dict[str, Any]:
    try:
        data = json.loads(_state_file(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(paths: Paths, state: Dict[str, Any]) -> None:
    fsutil.atomic_write(_state_file(paths), json.dumps(state, sort_keys=True).encode("utf-8"), mode=0o600)


def synodsmnotify_path() -> Optional[str]:
    """The synodsmnotify binary, or None where it does not exist (outside DSM)."""
    candidate = os.environ.get("SMARTPOP_SYNODSMNOTIFY", SYNODSMNOTIFY)
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def send_dsm(config: Config, subject: str, text: str) -> str:
    """Show a DSM desktop notification to the administrators group."""
    binary = synodsmnotify_path()
    if binary is None:
        raise AlertError(NOT_AVAILABLE)
    # Only the subject and text go on argv: they never contain a secret (callers pass status text).
    proc = subprocess.run([binary, "-c", APP_ID, "@administrators", redact(subject), redact(text)],
                          capture_output=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise AlertError(f"synodsmnotify exited with {proc.returncode}: "
                         f"{proc.stderr.decode('utf-8', 'replace').strip()[:200]}")
    return "DSM notification sent to @administrators"


def send_email(config: Config, subject: str, text: str) -> str:
    """Send the alert through MailPlus (the delivery target) to alerts.email_to."""
    to = config.alerts.email_to
    if not to:
        raise AlertError(NOT_CONFIGURED)
    domain = config.local_domains[0] if config.local_domains else "localhost"
    message = EmailMessage()
    message["From"] = f"SmartPop <smartpop@{domain}>"
    message["To"] = to
    message["Subject"] = f"[SmartPop] {redact(subject)}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(redact(text))
    with smtplib.SMTP(config.delivery.host, config.delivery.port, timeout=30) as smtp:
        smtp.send_message(message, from_addr="", to_addrs=[to])
    return f"e-mail handed to MailPlus ({config.delivery.host}:{config.delivery.port}) for {to}"


def send_webhook(config: Config, subject: str, text: str) -> str:
    """POST the alert to the configured webhook (Synology Chat form payload, else JSON)."""
    url = config.alerts.webhook_url.reveal()
    if not url:
        raise AlertError(NOT_CONFIGURED)
    import requests

    body = f"SmartPop: {redact(subject)}\n{redact(text)}"
    try:
        if "SYNO.Chat.External" in url:
            # Synology Chat incoming webhooks want a form field `payload` holding JSON.
            response = requests.post(url, data={"payload": json.dumps({"text": body})}, timeout=15)
        else:
            response = requests.post(url, json={"text": body, "subject": subject}, timeout=15)
    except requests.RequestException as exc:
        # The exception text can carry the URL and so its token: name only the class.
        raise AlertError(f"webhook not reachable ({type(exc).__name__})") from None
    if response.status_code >= 300:
        raise AlertError(f"webhook answered HTTP {response.status_code}")
    return f"webhook answered HTTP {response.status_code}"


class AlertError(Exception):
    """A channel could not deliver (the text says why, without secrets)."""


Sender = Callable[[Config, str, str], str]
SENDERS: Dict[str, Sender] = {"dsm": send_dsm, "email": send_email, "webhook": send_webhook}


def channel_enabled(config: Config, channel: str) -> bool:
    """Whether the admin switched this channel on."""
    if channel == "dsm":
        return config.alerts.dsm_notify
    if channel == "email":
        return bool(config.alerts.email_to)
    return bool(config.alerts.webhook_url)


def send_test(config: Config, channel: str) -> str:
    """Send one test alert through `channel` now (not rate-limited); raise AlertError."""
    if channel not in SENDERS:
        raise AlertError(f"unknown channel {channel!r}")
    try:
        return SENDERS[channel](config, "Test alert", "This is a test alert from SmartPop. Alerts work.")
    except AlertError:
        raise
    except Exception as exc:
        raise AlertError(redact(f"{type(exc).__name__}: {exc}")) from None


def notify(paths: Paths, config: Config, kind: str, subject: str, text: str, key: str = "") -> Dict[str, str]:
    """Send an alert on every enabled channel unless the same (kind, key) went out recently."""
    slot = f"{kind}:{key}"
    now = time.time()
    try:
        with _state_lock(paths):
            state = _read_state(paths)
            sent = state.setdefault("sent", {})
            last = sent.get(slot)
            if isinstance(last, (int, float)) and now - last < config.alerts.repeat_minutes * 60:
                log.info("alert %s suppressed (rate limit, last sent %d s ago)", slot, int(now - last))
                return {}
            sent[slot] = now
            _write_state(paths, state)
    except (OSError, LockBusy) as exc:
        # A full volume is one of the things alerts are for: send without the rate-limit record.
        log.warning("alert %s: cannot record it in %s (%s); sending anyway", slot, paths.data, exc)
    results: Dict[str, str] = {}
    for channel in CHANNELS:
        if not channel_enabled(config, channel):
            continue
        try:
            results[channel] = SENDERS[channel](config, subject, text)
            log.info("alert %s sent via %s", slot, channel)
        except Exception as exc:
            results[channel] = f"failed: {redact(str(exc)) or type(exc).__name__}"
            log.warning("alert %s via %s failed: %s", slot, channel, results[channel])
    return results


def sign_in_needed(paths: Paths, config: Config, account: str, exc: SignInRequired) -> None:
    """Alert that OAuth2 account `account` lost its grant; nothing for one never signed in (being set up)."""
    if exc.code == "not_signed_in":
        return
    try:
        # Rate-limited per account like every alert: one per repeat_minutes, not one per poll.
        notify(paths, config, "sign_in", f"Account {account} needs a new sign-in",
               f"SmartPop can no longer log in to {account}: {exc}. Open SmartPop > Accounts and sign in again. "
               "Its mail stays on the provider's server until then.", key=account)
    except Exception:  # an alert channel must never turn a failed login into a crash
        log.exception("%s: the alert about the sign-in could not be sent", account)


def _epoch(stamp: Optional[str]) -> Optional[float]:
    if not stamp:
        return None
    try:
        return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def check(paths: Paths, config: Config, report: Dict[str, Any], relay_state: Optional[str],
          now: Optional[float] = None) -> List[str]:
    """Raise the standing alerts found in a status report; return the (kind:key) slots raised."""
    now = time.time() if now is None else now
    raised: List[str] = []
    with _state_lock(paths):
        state = _read_state(paths)
    failing = state.setdefault("failing_since", {})
    fallback_seen = state.setdefault("fallback_seen", {})
    for entry in report.get("accounts", []):
        name = entry["name"]
        if entry.get("enabled") and entry.get("last_error"):
            last_ok = _epoch(entry.get("last_success")) or 0.0
            # Failing since the last success, or since the watcher first saw it fail.
            since = float(failing.get(name) or last_ok or now)
            failing[name] = since
            minutes = (now - since) / 60
            if minutes >= config.alerts.failing_minutes:
                notify(paths, config, "account_failing", f"Account {name} keeps failing",
                       f"Account {name} has failed for {int(minutes)} minutes. Last error: {entry['last_error']}. "
                       "Its mail stays on the provider's server.", key=name)
                raised.append(f"account_failing:{name}")
        else:
            failing.pop(name, None)
        total = int(entry.get("fallback") or 0)
        before = fallback_seen.get(name)
        fallback_seen[name] = total
        if before is not None and total > int(before):
            notify(paths, config, "fallback", f"Mail for {name} went to the fallback",
                   f"{total - int(before)} message(s) collected by {name} had no local recipient and went to "
                   f"{config.fallback_recipient}. Check aliases and local domains.", key=name)
            raised.append(f"fallback:{name}")
    if relay_state == "drift":
        notify(paths, config, "relay_drift", "Relay settings drifted",
               "MailPlus rewrote its Postfix settings; the SmartPop relay is no longer in place. "
               "The root task in DSM Task Scheduler re-applies it.")
        raised.append("relay_drift:")
    relay = report.get("relay") or {}
    if config.relay.enabled and relay.get("task_state") == "outdated":
        # After an upgrade the pasted command carries the old bundle's hash and refuses to run.
        notify(paths, config, "relay_task", "Relay task needs the new command",
               f"The root task in DSM Task Scheduler still carries SmartPop {relay.get('task_version') or '(older)'}"
               "'s hash and refuses to run this version, so relay settings are not kept up to date. "
               "Open SmartPop > Relay and paste the new command into the task.", key="task")
        raised.append("relay_task:task")
    with _state_lock(paths):
        fresh = _read_state(paths)
        if fresh.get("failing_since") != failing or fresh.get("fallback_seen") != fallback_seen:
            # Only on change: this runs every minute in `serve`, and an idle NAS's disks sleep.
            fresh["failing_since"] = failing
            fresh["fallback_seen"] = fallback_seen
            _write_state(paths, fresh)
    return raised


def dsm_available() -> bool:
    """Whether DSM desktop notifications can be sent from here."""
    return synodsmnotify_path() is not None or shutil.which("synodsmnotify") is not None


class AlertWatcher:
    """A background thread of `serve` that runs `check()` when something changed, else rarely.

    The collector pokes it after every run that changed an account's status; a failing
    account is looked at again when its `failing_minutes` are up; relay drift and the root
    task (changed by root, outside this process) are looked at every `interval` (10 min).
    No timer fires every minute: an idle NAS's disks and CPU stay asleep. The same wake-ups
    start the daily mail health check when it is due (health/daily.py).
    """

    def __init__(self, paths: Paths, interval: float = 600.0) -> None:
        self.paths = paths
        self.interval = interval
        self._stop = threading.Event()
        self._poked = threading.Event()
        self._next_due: Optional[float] = None  # when a failing account crosses its threshold
        self.daily = DailyHealth(paths)
        self._thread = threading.Thread(target=self._loop, name="alert-watcher", daemon=True)

    def start(self) -> AlertWatcher:
        """Start watching."""
        self._thread.start()
        return self

    def poke(self) -> None:
        """Check soon: an account's status changed."""
        self._poked.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching."""
        self._stop.set()
        self._poked.set()
        self._thread.join(timeout)

    def _wait(self) -> float:
        if self._next_due is None:
            return self.interval
        return max(1.0, min(self.interval, self._next_due - time.time()))

    def _loop(self) -> None:
        while True:
            self._poked.wait(self._wait())
            self._poked.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:
                log.exception("alert check failed")
            self.daily.maybe_start()

    def run_once(self) -> List[str]:
        """One check of the current status (also used by tests)."""
        from smartpop.config import store
        from smartpop.status import build_status

        report = build_status(self.paths)
        if report.get("config_error"):
            return []
        config = store.load(self.paths)
        relay_state = None
        if config.relay.enabled:
            from smartpop.relay.service import relay_status

            relay_state = relay_status(self.paths, config).get("state")
        raised = check(self.paths, config, report, relay_state)
        self._next_due = _next_threshold(self.paths, config)
        return raised


def _next_threshold(paths: Paths, config: Config) -> Optional[float]:
    """When the earliest failing account reaches `failing_minutes` (None: none is failing, or all did)."""
    now = time.time()
    with _state_lock(paths):
        failing = _read_state(paths).get("failing_since") or {}
    due = [float(since) + config.alerts.failing_minutes * 60 for since in failing.values()
           if isinstance(since, (int, float))]
    upcoming = [t for t in due if t > now]
    return min(upcoming) + 1.0 if upcoming else None
