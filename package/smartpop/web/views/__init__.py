"""The pages of the UI, one blueprint per page."""

from __future__ import annotations

from flask import Flask

from smartpop.web.views import accounts, alerts, common, dashboard, doctor, health, logs, relay, routing, signin, trail


def register(app: Flask) -> None:
    """Attach every page and the template helpers to `app`."""
    common.install(app)
    for module in (dashboard, accounts, signin, routing, relay, alerts, health, trail, logs, doctor):
        app.register_blueprint(module.bp)
