"""`smartpop health [--json]`: run the mail health checks and print the findings."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Dict, List

from smartpop.config import store
from smartpop.health.findings import PROBLEM
from smartpop.health.service import run_all
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


def cmd_health(paths: Paths, args: argparse.Namespace) -> int:
    """Run every check, store the report in DATA, print it; exit 1 when any check found a problem."""
    config = store.load(paths)
    report = run_all(paths, config)
    # Every line is masked once more: a server's answer could echo a registered secret.
    if getattr(args, "json", False):
        print(redact(json.dumps(report, indent=2, sort_keys=True)))
    else:
        print(redact(format_report(report)))
    return EXIT_PROBLEM if report["status"] == PROBLEM else EXIT_OK
