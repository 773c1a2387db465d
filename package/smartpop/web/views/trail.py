"""Trail: "did we get that mail, and where did it go?" Search, one message's path, CSV, and the trail settings.

URLs other pages link to (the overview's counters, the charts): /trail?outcome=fallback&since=<unix
or ISO>&account=NAME; every filter of trail.query.parse_filters is a URL parameter of the same name.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterator, List, Optional

from flask import Blueprint, Response, abort, g, request, stream_with_context

from smartpop.config.schema import Trail, default_of
from smartpop.errors import StateError
from smartpop.trail import export, query
from smartpop.trail.record import OUTCOMES
from smartpop.web.forms import errors_of
from smartpop.web.views.common import load_config, page, paths, t
from smartpop.web.views.formpage import Reply, reply, save_form

log = logging.getLogger(__name__)
bp = Blueprint("trail", __name__)

PAGE_SIZE = 50
FILTERS = ("since", "until", "sender", "rcpt", "message_id", "account", "outcome")
SETTING_FIELDS = ("subjects", "retention_days")


def _raw_filters() -> Dict[str, str]:
    """The filter parameters as typed (kept in the form and in the links of the page)."""
    return {name: request.args.get(name, "").strip()[:1000] for name in FILTERS if request.args.get(name, "").strip()}


def _render(settings_values: Optional[Dict[str, Any]] = None, settings_errors: Optional[Dict[str, str]] = None,
            status: int = 200) -> Reply:
    config, config_error = load_config()
    raw = _raw_filters()
    filters, errors = query.parse_filters(raw)
    try:
        number = max(1, min(int(request.args.get("page", "1")), 100000))
    except ValueError:
        number = 1
    rows: List[Dict[str, Any]] = []
    total = 0
    read_error = ""
    if not errors:
        try:
            rows, total = query.search(paths(), filters, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
        except StateError as exc:
            log.warning("trail search failed: %s", exc)
            read_error = t("trail.read_error")
    for row in rows:
        row["time"] = query.local_time(row["at"])
    settings = config.trail if config is not None else Trail()
    shown = {"subjects": settings.subjects, "retention_days": settings.retention_days}
    if settings_values:
        shown.update(settings_values)
    accounts = [a.name for a in config.accounts] if config else []
    if filters.account and filters.account not in accounts:
        accounts.append(filters.account)  # a link may name an account deleted since
    outcome_choices = list(OUTCOMES)
    selected_outcome = ",".join(filters.outcome)
    if selected_outcome and selected_outcome not in outcome_choices:
        outcome_choices.append(selected_outcome)  # e.g. "waiting,failed" from a chart's link
    body = page("trail.html", page_title="nav.trail", rows=rows, total=total, raw=raw, filter_errors=errors,
                read_error=read_error, page_number=number, pages=max(1, -(-total // PAGE_SIZE)),
                page_size=PAGE_SIZE, accounts=accounts, outcomes=outcome_choices, selected_outcome=selected_outcome,
                csv_args=filters.query_args(), settings=shown, errors=settings_errors or {},
                config_error=config_error)
    return reply(body, status)


@bp.route("/trail")
@bp.route("/trail/")
def index() -> Reply:
    """The search page: filters, results (newest first), CSV link, settings."""
    return _render()


@bp.route("/trail/<int:trail_id>")
def detail(trail_id: int) -> Reply:
    """One message's path: provider, routing rule, MailPlus's reply per recipient."""
    config, config_error = load_config()
    try:
        row = query.detail(paths(), trail_id)
    except StateError as exc:
        log.warning("trail detail failed: %s", exc)
        row = None
    if row is None:
        abort(404)
    row["time"] = query.local_time(row["at"])
    account = None
    if config is not None:
        account = next((a for a in config.accounts if a.name == row["account"]), None)
    return page("trail_detail.html", page_title="nav.trail", row=row, account=account, back=_raw_filters(),
                subjects_on=bool(config and config.trail.subjects), config_error=config_error)


@bp.route("/trail/export.csv")
def export_csv() -> Reply:
    """The current search as CSV, streamed (same filters, every match, cells safe for spreadsheets)."""
    filters, errors = query.parse_filters(_raw_filters())
    if errors:
        return Response(t("trail.bad_filters") + "\n", status=400, mimetype="text/plain")
    source = paths()

    def generate() -> Iterator[bytes]:
        try:
            for text in export.lines(query.each(source, filters)):
                yield text.encode("utf-8")
        except StateError as exc:
            # Headers are gone already: end the file with a line that says it is cut short.
            log.warning("trail export stopped: %s", exc)
            yield b"\r\n# export stopped: the state store could not be read\r\n"

    name = time.strftime("smartpop-trail-%Y%m%d-%H%M%S.csv")
    log.info("trail export (%s) by %s", ", ".join(sorted(filters.query_args())) or "no filters", g.caller.user)
    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.route("/trail/settings", methods=["POST"])
def save_settings() -> Reply:
    """Save what the trail keeps (subjects) and for how long (retention_days)."""
    form = request.form

    def edit(document: Dict[str, Any]) -> None:
        document["trail"] = {"subjects": form.get("subjects") == "on",
                             "retention_days": form.get("retention_days",
                                                        str(default_of(Trail, "retention_days"))).strip()}

    def refused(exc: Exception) -> Reply:
        values = {"subjects": form.get("subjects") == "on", "retention_days": form.get("retention_days", "")}
        return _render(values, errors_of(exc, g.lang, SETTING_FIELDS), status=422)

    return save_form("trail.index", edit, refused, log, "trail settings changed by %s", anchor="#settings")
