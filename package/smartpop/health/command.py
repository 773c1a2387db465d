"""`smartpop health [--json]`: run the mail health checks and print the findings."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any, Dict, List

from smartpop.config import store
from smartpop.errors import UsageError
from smartpop.health import roundtrip
from smartpop.health.findings import PROBLEM
from smartpop.health.service import run_checks
from smartpop.log import redact
from smartpop.paths import Paths

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PROBLEM = 1
_MARK = {"ok": "ok     ", "warning": "warning", "problem": "PROBLEM"}


def format_report(report: Dict[str, Any]) -> str:
    """The report as text: one line per finding, grouped by subject."""
    lines: List[str] = [f"Mail health, {report['checked_at']}: {report['status']}"]
    subject = None
    for finding in report["findings"]:
        if finding["subject"] != subject:
            subject = finding["subject"]
            lines.append(f"\n{subject}")
        lines.append(f"  {_MARK.get(finding['status'], finding['status'])}  {finding['check']:<12} "
                     f"{finding['summary']}")
    if not report["findings"]:
        lines.append("nothing to check: no local domain, relay or account is configured")
    return "\n".join(lines)


# How often --round-trip looks whether the collector has fetched the message back.
POLL = 2.0


def cmd_round_trip(paths: Paths, args: argparse.Namespace) -> int:
    """Send the round-trip message, wait for the collector to fetch it back, print the outcome."""
    config = store.load(paths)
    trip = roundtrip.start(paths, config)
    print(redact(f"round trip: sent to {trip['to']} via {trip['via']}: {trip['reply'] or trip['error']}"), flush=True)
    # Past the expiry the finding turns into a problem with its reason, so the full wait ends just after it.
    limit = float(trip["expires_at"]) + 1 if args.wait is None else time.time() + max(0, args.wait)
    finding = roundtrip.latest_finding(paths)
    # A wait loop only while a message is on its way: nothing is due otherwise.
    while finding is not None and finding.details.get("state") == roundtrip.PENDING and time.time() < limit:
        time.sleep(POLL)
        finding = roundtrip.latest_finding(paths)
    if finding is None:
        return EXIT_PROBLEM
    print(redact(f"{_MARK.get(finding.status, finding.status)}  {finding.summary}"))
    return EXIT_PROBLEM if finding.status == PROBLEM else EXIT_OK


def cmd_health(paths: Paths, args: argparse.Namespace) -> int:
    """Run every check, store the report in DATA, print it; exit 1 when any check found a problem."""
    if getattr(args, "round_trip", False):
        return cmd_round_trip(paths, args)
    config = store.load(paths)
    report = run_checks(paths, config)
    if report is None:  # only within one process; the CLI is its own
        raise UsageError("a health check is already running")
    # Every line is masked once more: a server's answer could echo a registered secret.
    if getattr(args, "json", False):
        print(redact(json.dumps(report, indent=2, sort_keys=True)))
    else:
        print(redact(format_report(report)))
    return EXIT_PROBLEM if report["status"] == PROBLEM else EXIT_OK
