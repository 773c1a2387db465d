"""Alerts: thresholds and channels (DSM notification, e-mail, webhook), each with a test button."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Union

from flask import Blueprint, Response, g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from smartpop import alerts as alert_service
from smartpop.config.schema import Alerts, defaults
from smartpop.errors import ConfigError
from smartpop.web.forms import ALERT_FIELDS, FormError, change_document, errors_of
from smartpop.web.views.common import answer, load_config, page, paths, t

log = logging.getLogger(__name__)
bp = Blueprint("alerts", __name__, url_prefix="/alerts")
Reply = Union[str, BaseResponse]


def _render(values: Optional[Dict[str, Any]] = None, errors: Optional[Dict[str, str]] = None,
            status: int = 200) -> Reply:
    config, error = load_config()
    a = config.alerts if config is not None else Alerts()
    shown: Dict[str, Any] = {"failing_minutes": a.failing_minutes, "repeat_minutes": a.repeat_minutes,
                             "email_to": a.email_to or "", "dsm_notify": a.dsm_notify,
                             "webhook_set": bool(a.webhook_url)}
    if values:
        shown.update(values)
    body = page("alerts.html", page_title="nav.alerts", alerts=shown, errors=errors or {},
                dsm_available=alert_service.dsm_available(), channels=alert_service.CHANNELS, config_error=error)
    return Response(body, status=status) if status != 200 else body


@bp.route("/")
def index() -> Reply:
    """The alerts page."""
    return _render()


@bp.route("/", methods=["POST"])
def save() -> Reply:
    """Save the alert settings (an empty webhook field keeps the stored URL)."""
    form = request.form
    try:
        def edit(document: Dict[str, Any]) -> None:
            current = document.setdefault("alerts", {})
            default = defaults(Alerts)
            webhook = form.get("webhook_url", "").strip()
            if form.get("webhook_clear") == "on":
                webhook = ""
            elif not webhook:
                webhook = current.get("webhook_url", "")
            current.update({"failing_minutes": form.get("failing_minutes", str(default["failing_minutes"])).strip(),
                            "repeat_minutes": form.get("repeat_minutes", str(default["repeat_minutes"])).strip(),
                            "email_to": form.get("email_to", "").strip() or None,
                            "dsm_notify": form.get("dsm_notify") == "on", "webhook_url": webhook})

        change_document(paths(), edit)
    except (ConfigError, FormError) as exc:
        values: Dict[str, Any] = {k: form.get(k, "") for k in ("failing_minutes", "repeat_minutes", "email_to")}
        values["dsm_notify"] = form.get("dsm_notify") == "on"
        return _render(values, errors_of(exc, g.lang, ALERT_FIELDS), status=422)
    log.info("alert settings changed by %s", g.caller.user)
    return redirect(url_for("alerts.index", done="saved"))


@bp.route("/test/<channel>", methods=["POST"])
def test(channel: str) -> Response:
    """Send a test alert through one channel now."""
    if channel not in alert_service.CHANNELS:
        return answer(False, t("alerts.unknown_channel"), 404)
    config, error = load_config()
    if config is None:
        return answer(False, error or "", 409)
    try:
        result = alert_service.send_test(config, channel)
    except alert_service.AlertError as exc:
        text = str(exc)
        if text == alert_service.NOT_AVAILABLE:
            text = t("alerts.dsm.unavailable")
        elif text == alert_service.NOT_CONFIGURED:
            text = t("alerts.not_configured")
        return answer(False, t("alerts.test.failed", detail=text))
    log.info("test alert via %s sent by %s", channel, g.caller.user)
    return answer(True, t("alerts.test.ok", detail=result))
