"""Alerts: thresholds and channels (DSM notification, e-mail, webhook), each with a test button."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from flask import Blueprint, Response, g, request

from smartpop import alerts as alert_service
from smartpop.config.schema import Alerts, Config, defaults
from smartpop.web.forms import ALERT_FIELDS, errors_of
from smartpop.web.views.common import answer, load_config, t
from smartpop.web.views.formpage import Reply, SettingsPage, save_form

log = logging.getLogger(__name__)
bp = Blueprint("alerts", __name__, url_prefix="/alerts")


def _shown(config: Optional[Config]) -> Dict[str, Any]:
    """The alert settings the form shows (the webhook URL only as set or not: it carries a token)."""
    a = config.alerts if config is not None else Alerts()
    return {"failing_minutes": a.failing_minutes, "repeat_minutes": a.repeat_minutes, "email_to": a.email_to or "",
            "dsm_notify": a.dsm_notify, "webhook_set": bool(a.webhook_url)}


PAGE = SettingsPage("alerts.html", "nav.alerts", "alerts", _shown,
                    lambda config: {"dsm_available": alert_service.dsm_available(),
                                    "channels": alert_service.CHANNELS})


@bp.route("/")
def index() -> Reply:
    """The alerts page."""
    return PAGE.render()


@bp.route("/", methods=["POST"])
def save() -> Reply:
    """Save the alert settings (an empty webhook field keeps the stored URL)."""
    form = request.form

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

    def refused(exc: Exception) -> Reply:
        values: Dict[str, Any] = {k: form.get(k, "") for k in ("failing_minutes", "repeat_minutes", "email_to")}
        values["dsm_notify"] = form.get("dsm_notify") == "on"
        return PAGE.render(values, errors_of(exc, g.lang, ALERT_FIELDS), status=422)

    return save_form("alerts.index", edit, refused, log, "alert settings changed by %s")


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
