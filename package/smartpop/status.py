"""The status report shared by `status`, the web UI and alerts (read side only)."""

from __future__ import annotations

from typing import Any, Dict, List

from smartpop import __version__
from smartpop.config import store
from smartpop.errors import ConfigError
from smartpop.paths import Paths

ACCOUNT_FIELDS = ["last_run", "last_success", "collected", "fallback", "last_error", "waiting", "redelivered"]
# Figures of the most recent run (collected/fallback above are totals), whether one runs now,
# and how the daemon waits for new mail ('idle', 'polling: <why>', or None: polling by design).
COLLECTOR_EXTRA_FIELDS = ["last_collected", "last_fallback", "running", "push"]


def build_status(paths: Paths) -> Dict[str, Any]:
    """Assemble per-account and relay status as plain JSON data (no secrets)."""
    report: Dict[str, Any] = {"version": __version__, "config_error": None, "accounts": [], "relay": {}}
    try:
        config = store.load(paths)
    except ConfigError as exc:
        report["config_error"] = str(exc)
        return report
    accounts: List[Dict[str, Any]] = []
    # The collector keeps its per-account figures in its SQLite store (written atomically with
    # the delivery journal).
    from smartpop.collector.statusread import read_account_status

    collected = read_account_status(paths)
    for account in config.accounts:
        seen = collected.get(account.name, {})
        entry: Dict[str, Any] = {"name": account.name, "enabled": account.enabled,
                                 "protocol": account.protocol, "host": account.host}
        for key in ACCOUNT_FIELDS + COLLECTOR_EXTRA_FIELDS:
            entry[key] = seen.get(key)
        accounts.append(entry)
    report["accounts"] = accounts
    from smartpop.relay.service import relay_status

    report["relay"] = dict(relay_status(paths, config), enabled=config.relay.enabled)
    return report


def _push_text(push: Any) -> str:
    if push == "idle":
        return ", new mail: pushed by the server (IMAP IDLE)"
    if isinstance(push, str) and push:
        return f", new mail: {push}"
    return ""


def format_status(report: Dict[str, Any]) -> str:
    """Render the status report for a terminal."""
    lines = [f"SmartPop {report['version']}"]
    if report.get("config_error"):
        lines.append(f"config error: {report['config_error']}")
        return "\n".join(lines)
    if not report["accounts"]:
        lines.append("no accounts configured")
    for entry in report["accounts"]:
        state = "enabled" if entry["enabled"] else "disabled"
        lines.append(f"{entry['name']} ({entry['protocol']} {entry['host']}, {state}): "
                     f"last run {entry['last_run'] or 'never'}, last success {entry['last_success'] or 'never'}, "
                     f"collected {entry['collected'] or 0}, to fallback {entry['fallback'] or 0}, "
                     f"sent again after an interrupted hand-over (possible duplicates) {entry['redelivered'] or 0}, "
                     f"waiting {entry['waiting'] if entry['waiting'] is not None else 'unknown'}, "
                     f"last error {entry['last_error'] or 'none'}" + _push_text(entry.get("push")))
    relay = report["relay"]
    lines.append(f"relay: {relay['state']}: {relay.get('detail', '')}")
    task = relay.get("task_state")
    if task == "outdated":
        lines.append(f"relay root task: OUTDATED (it last ran SmartPop {relay.get('task_version') or 'before 0.2'}): "
                     "it refuses to run this version until you replace its command in DSM Task Scheduler")
    elif task == "current":
        lines.append(f"relay root task: matches this version (last run {relay.get('task_last_run')})")
    elif task == "never":
        lines.append("relay root task: has not run yet")
    if relay.get("task_command"):
        lines.append(f"relay root task command (DSM Task Scheduler, user root): {relay['task_command']}")
    return "\n".join(lines)
