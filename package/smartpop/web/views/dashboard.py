"""Dashboard: per-account state, relay state, and "fetch now" with live progress."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request

from smartpop.config.schema import Config
from smartpop.errors import StateError
from smartpop.relay import service as relay_service
from smartpop.status import build_status
from smartpop.trail import charts, query
from smartpop.web import explain
from smartpop.web.views.common import answer, load_config, page, paths, t
from smartpop.web.views.health import summary as health_summary

log = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__)


def relay_state(config: Config) -> Dict[str, Any]:
    """The relay's state from the relay service ('unknown' when asking it failed)."""
    if not config.relay.enabled:
        return {"state": "disabled", "detail": "", "task_command": ""}
    try:
        return dict(relay_service.relay_status(paths(), config))
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


CHART_WIDTH = 720  # viewBox units; the SVG scales to the card, 1:1 in an 800 px window


def trail_link(since: float, until: float, outcome: Optional[str], account: Optional[str]) -> str:
    """The trail search for one bar, segment or table cell (the trail page's query parameters)."""
    # The chart's "waiting" series holds the trail's 'waiting' and 'failed' rows: its links ask for both.
    wanted = "waiting,failed" if outcome == "waiting" else outcome
    params: List[Any] = [("outcome", wanted)] if wanted else []
    params += [("since", int(since)), ("until", int(until))]
    if account:
        params.append(("account", account))
    caller = g.get("caller")
    if caller is not None and caller.syno_token:  # as url_for adds it (app.keep_syno_token)
        params.append(("SynoToken", caller.syno_token))
    return f"{request.script_root}/trail?{urlencode(params)}"


def chart_context(config: Optional[Config]) -> Dict[str, Any]:
    """Both charts (24 hours, 30 days) of all accounts or of ?chart_account=, with their table rows."""
    names = [account.name for account in config.accounts] if config else []
    chosen = request.args.get("chart_account") or None
    account = chosen if chosen in names else None
    now = time.time()
    labels = {series: t(f"chart.{series}") for series in charts.SERIES}
    labels["bar"] = t("chart.bar")
    spans = []
    for span in ("hours", "days"):
        buckets = charts.read(paths().state_db, now, span, account)
        labels.update(title=t(f"chart.{span}.title"), tick=t(f"chart.{span}.tick"), when=t(f"chart.{span}.when"))
        rows = [{"when": charts.when(b, labels["when"]), "total": b.total,
                 "link": trail_link(b.start, b.end, None, account),
                 "cells": [(b.count(s), trail_link(b.start, b.end, s, account)) for s in charts.SERIES]}
                for b in buckets]
        svg = charts.svg(buckets, labels, CHART_WIDTH,
                         link=lambda b, s: trail_link(b.start, b.end, s, account))
        spans.append({"id": span, "title": labels["title"], "svg": svg, "rows": rows,
                      "total": sum(b.total for b in buckets)})
    return {"accounts": names, "account": account, "spans": spans, "series": charts.SERIES}


@bp.route("/")
def index() -> str:
    """The dashboard page."""
    config, error = load_config()
    relay = relay_state(config) if config else {"state": "unknown", "detail": "", "task_command": ""}
    relay["detail_text"] = explain.relay_detail(g.lang, relay)
    return page("dashboard.html", page_title="nav.dashboard", report=_report(), relay=relay, config_error=error,
                job=current_app.extensions["smartpop_jobs"].snapshot(), health=health_summary(), today=_today(),
                charts=chart_context(config))


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
    account = request.form.get("account") or None
    job = current_app.extensions["smartpop_jobs"].start(account)
    return answer(True, t("js.fetch_running"), job=job)
