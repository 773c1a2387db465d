"""Logs: recent events from the package log, filterable by account and level."""

from __future__ import annotations

from flask import Blueprint, g, request

from smartpop.web import explain
from smartpop.web.logview import LEVELS, read_events
from smartpop.web.views.common import load_config, page, paths

bp = Blueprint("logs", __name__, url_prefix="/logs")


@bp.route("/")
def index() -> str:
    """The log page."""
    config, error = load_config()
    account = request.args.get("account") or None
    level = request.args.get("level") or "INFO"
    names = [a.name for a in config.accounts] if config else []
    if account not in names:
        account = None
    events = read_events(paths().log_file, account=account, level=level)
    for event in events:
        event.message = explain.log_line(g.lang, event.message)
    return page("logs.html", page_title="nav.logs", events=events, accounts=names, account=account or "",
                level=level, levels=LEVELS, config_error=error)
