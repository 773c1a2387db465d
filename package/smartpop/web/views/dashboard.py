"""Dashboard: per-account state, relay state, and "fetch now" with live progress."""

from __future__ import annotations

import logging
from typing import Any, Dict

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request

from smartpop.config.schema import Config
from smartpop.errors import StateError
from smartpop.status import build_status
from smartpop.trail import query
from smartpop.web import explain, services
from smartpop.web.views.common import answer, load_config, page, paths, t
from smartpop.web.views.health import summary as health_summary

log = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__)


def relay_state(config: Config) -> Dict[str, Any]:
    """The relay's state from the relay service, or a clear 'not available yet'."""
    if not config.relay.enabled:
        return {"state": "disabled", "detail": "", "task_command": ""}
    try:
        relay = services.relay()
    except services.ServiceUnavailable:
        return {"state": "unavailable", "detail": "", "task_command": ""}
    try:
        return dict(relay.relay_status(paths(), config))
    except Exception as exc:
        log.exception("relay status failed")
        return {"state": "unknown", "reason": "status_failed", "detail": str(exc), "task_command": ""}


def _report() -> Dict[str, Any]:
    return build_status(paths())


def _today() -> Dict[str, Any]:
    """Today's trail counts per account and outcome, and the 'since' of the links that open them."""
    since = query.parse_time("today") or 0.0
    try:
        counts = query.counts(paths(), since)
    except StateError as exc:  # the overview shows without the links rather than fail
        log.warning("trail counts failed: %s", exc)
        counts = {}
    return {"since": f"{since:.0f}", "counts": counts}


@bp.route("/")
def index() -> str:
    """The dashboard page."""
    config, error = load_config()
    relay = relay_state(config) if config else {"state": "unknown", "detail": "", "task_command": ""}
    relay["detail_text"] = explain.relay_detail(g.lang, relay)
    return page("dashboard.html", page_title="nav.dashboard", report=_report(), relay=relay, config_error=error,
                job=current_app.extensions["smartpop_jobs"].snapshot(), health=health_summary(), today=_today())


@bp.route("/fragment/accounts")
def accounts_fragment() -> str:
    """Just the account status rows, for the page script's refresh."""
    return render_template("_status_rows.html", report=_report(), today=_today())


@bp.route("/api/status")
def api_status() -> Response:
    """The status report as JSON (no secrets; the same data as `smartpop status --json`)."""
    return jsonify(_report())


@bp.route("/api/fetch", methods=["GET"])
def fetch_progress() -> Response:
    """The current or last UI-started fetch."""
    return jsonify(current_app.extensions["smartpop_jobs"].snapshot())


@bp.route("/api/fetch", methods=["POST"])
def fetch_now() -> Response:
    """Start a collection pass in the background."""
    try:
        services.collector()
    except services.ServiceUnavailable:
        return answer(False, t("error.unavailable.collector"), 503)
    account = request.form.get("account") or None
    job = current_app.extensions["smartpop_jobs"].start(account)
    return answer(True, t("js.fetch_running"), job=job)
