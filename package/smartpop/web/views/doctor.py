"""Diagnostics: the facts of `smartpop doctor`, for a bug report and for MailPlus's protection of collected mail."""

from __future__ import annotations

from typing import Any, Dict

from flask import Blueprint, Response, jsonify

from smartpop.doctor import facts, probes
from smartpop.web.views.common import page, paths

bp = Blueprint("doctor", __name__, url_prefix="/doctor")


def _report() -> Dict[str, Any]:
    return facts.report(probes.collect(paths()))


@bp.route("/")
def index() -> str:
    """The diagnostics page: the protection facts first, then the whole report as text to copy."""
    data = _report()
    return page("doctor.html", page_title="doctor.title", protection=facts.protection_summary(data),
                report_text=facts.format_text(data), counts=data["counts"])


@bp.route("/api")
def api() -> Response:
    """The same report as `smartpop doctor --json`."""
    return jsonify(_report())
