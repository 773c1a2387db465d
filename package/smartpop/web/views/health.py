"""Health: the last mail health report, "Run checks now" with progress, and the round trip."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, List, Optional

from flask import Blueprint, Response, current_app, g, jsonify, render_template

from smartpop.errors import ConfigError
from smartpop.health import roundtrip, service
from smartpop.health.findings import localized
from smartpop.log import redact
from smartpop.web.views.common import answer, load_config, page, paths, t

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__, url_prefix="/health")
STATUSES = ("problem", "warning", "ok")


def _jobs() -> Any:
    return current_app.extensions["smartpop_health_jobs"]


def _local_time(epoch: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else ""


def summary() -> Dict[str, Any]:
    """The stored report's overall status and time, for the page and the overview's pill."""
    report = service.load_report(paths())
    if report is None:
        return {"status": "never", "checked": "", "counts": {}}
    counts = {s: sum(1 for f in report.get("findings", []) if f.get("status") == s) for s in STATUSES}
    return {"status": report.get("status", "never"), "checked": _local_time(service.report_epoch(report)),
            "duration": report.get("duration_seconds"), "counts": counts}


def _findings() -> List[Dict[str, Any]]:
    """The stored findings, problems first, each in the page's language, its details as redacted JSON text."""
    report = service.load_report(paths()) or {}
    rows = []
    for finding in report.get("findings", []):
        if not isinstance(finding, dict):
            continue
        rows.append({**finding, "text": redact(localized(finding, g.lang)),
                     "details_text": redact(json.dumps(finding.get("details", {}), indent=1, sort_keys=True,
                                                       default=str))})
    order = {s: i for i, s in enumerate(STATUSES)}
    return sorted(rows, key=lambda f: order.get(f.get("status", ""), 3))


def _round_trip_target() -> Dict[str, str]:
    config, error = load_config()
    if config is None:
        return {"error": error or ""}
    try:
        return roundtrip.addresses(config)
    except ConfigError as exc:
        return {"error": redact(str(exc))}


@bp.route("/")
def index() -> str:
    """The health page."""
    return page("health.html", page_title="nav.health", health=summary(), findings=_findings(),
                target=_round_trip_target(), jobs=_jobs().snapshot(g.lang))


@bp.route("/fragment/findings")
def findings_fragment() -> str:
    """The findings and the last-run line, for the page script's refresh after a run."""
    return render_template("_health_findings.html", health=summary(), findings=_findings())


@bp.route("/api")
def progress() -> Response:
    """The check run's progress and the round trip's state (no token, no password)."""
    return jsonify(_jobs().snapshot(g.lang))


@bp.route("/api/run", methods=["POST"])
def run_now() -> Response:
    """Start every check in the background; the page polls /api."""
    jobs = _jobs().start_checks(g.lang)
    log.info("health checks started by %s", g.caller.user)
    return answer(True, t("js.health_running"), jobs=jobs)


@bp.route("/api/round-trip", methods=["POST"])
def round_trip() -> Response:
    """Send the round-trip test message in the background; the page polls /api until it is back."""
    log.info("round trip started by %s", g.caller.user)
    return answer(True, t("health.roundtrip.sending"), jobs=_jobs().start_round_trip(g.lang))
