"""Relay: settings, sender relays, status with the Task Scheduler command, and a test mail."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from flask import Blueprint, Response, g, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from smartpop.config.schema import RELAY_SECURITIES, Config, Relay, SenderRelay, default_of, render_config
from smartpop.config.validators import as_address
from smartpop.errors import ConfigError
from smartpop.relay import service as relay_service
from smartpop.web import explain, presets
from smartpop.web.forms import (
    RELAY_FIELDS,
    RELAY_SERVER,
    RELAY_STANDINS,
    SENDER_FIELDS,
    FieldErrors,
    FormError,
    change_document,
    collect_errors,
    errors_of,
    field_message,
    relay_fields,
    require_same_server,
    sender_relay_document,
)
from smartpop.web.views.common import answer, load_config, paths
from smartpop.web.views.dashboard import relay_state
from smartpop.web.views.formpage import Reply, SettingsPage, save_form

log = logging.getLogger(__name__)
bp = Blueprint("relay", __name__, url_prefix="/relay")


def _public(config: Optional[Config]) -> Dict[str, Any]:
    """The relay settings without any password."""
    relay = config.relay if config is not None else Relay()
    return {"enabled": relay.enabled, "host": relay.host or "", "port": relay.port, "security": relay.security,
            "username": relay.username, "password_set": bool(relay.password),
            "sender_relays": [{"sender": s.sender, "host": s.host, "port": s.port, "security": s.security,
                               "username": s.username} for s in relay.sender_relays]}


def _context(config: Optional[Config]) -> Dict[str, Any]:
    """The relay's state (with the Task Scheduler command), the choices and the provider presets."""
    state = relay_state(config) if config else {"state": "unknown", "detail": "", "task_command": ""}
    state["detail_text"] = explain.relay_detail(g.lang, state)
    return {"status": state, "securities": RELAY_SECURITIES, "presets": presets.as_json_ready(),
            "sender_security": default_of(SenderRelay, "security")}


PAGE = SettingsPage("relay.html", "nav.relay", "relay", _public, _context)


def _relay_errors() -> FieldErrors:
    """Every problem of the posted relay settings at once, each at its field."""
    config, _ = load_config()
    if config is None:
        return {}
    form = request.form
    document = render_config(config)
    document["relay"].update(relay_fields(form, document["relay"]))

    def same_server(after: Config) -> None:
        if not form.get("password"):
            require_same_server(config.relay, after.relay, RELAY_SERVER)

    return collect_errors(document, lambda d: d["relay"],
                          lambda key: key.startswith("relay.") and not key.startswith("relay.sender_relays"),
                          RELAY_FIELDS, RELAY_STANDINS, g.lang, same_server)


def _sender_errors() -> FieldErrors:
    """Every problem of the posted sender relay at once, each at its field."""
    config, _ = load_config()
    if config is None:
        return {}
    form: MultiDict[str, str] = request.form
    document = render_config(config)
    items: List[Dict[str, Any]] = document["relay"]["sender_relays"]
    errors: FieldErrors = {}
    try:
        item, index = sender_relay_document(form, items)
    except FormError as exc:
        errors[exc.field] = field_message(exc, g.lang)
        form = form.copy()
        form["password"] = RELAY_STANDINS["password"]
        item, index = sender_relay_document(form, items)
    replaced = index >= 0
    if replaced:
        items[index] = item
    else:
        items.append(item)
        index = len(items) - 1

    def same_server(after: Config) -> None:
        if replaced and not request.form.get("password"):
            require_same_server(config.relay.sender_relays[index], after.relay.sender_relays[index], RELAY_SERVER)

    found = collect_errors(document, lambda d: d["relay"]["sender_relays"][index],
                           lambda key: key.startswith(f"relay.sender_relays[{index}]."), SENDER_FIELDS,
                           RELAY_STANDINS, g.lang, same_server)
    return {**found, **errors}


@bp.route("/")
def index() -> Reply:
    """The relay page."""
    return PAGE.render()


@bp.route("/", methods=["POST"])
def save() -> Reply:
    """Save the main relay settings (an empty password keeps the stored one for the same server and user)."""
    form = request.form

    def edit(document: Dict[str, Any]) -> None:
        document["relay"].update(relay_fields(form, document["relay"]))

    def same_server(before: Config, after: Config) -> None:
        # Otherwise the root task would hand the stored password to the new relay host.
        if not form.get("password"):
            require_same_server(before.relay, after.relay, RELAY_SERVER)

    def refused(exc: Exception) -> Reply:
        values: Dict[str, Any] = {k: form.get(k, "") for k in ("host", "port", "security", "username")}
        values["enabled"] = "enabled" in form
        return PAGE.render(values, {**_relay_errors(), **errors_of(exc, g.lang, RELAY_FIELDS)}, status=422)

    return save_form("relay.index", edit, refused, log, "relay settings changed by %s", check=same_server)


@bp.route("/senders", methods=["POST"])
def add_sender() -> Reply:
    """Add a sender relay, or replace the one for the same sender."""
    form = request.form
    replaced: List[int] = []

    def edit(document: Dict[str, Any]) -> None:
        items = document["relay"]["sender_relays"]
        item, index = sender_relay_document(form, items)
        if index >= 0:
            items[index] = item
            replaced.append(index)
        else:
            items.append(item)

    def same_server(before: Config, after: Config) -> None:
        # Per entry: the stored password of this sender goes only to this sender's server.
        if replaced and not form.get("password"):
            index = replaced[-1]
            require_same_server(before.relay.sender_relays[index], after.relay.sender_relays[index],
                                RELAY_SERVER)

    def refused(exc: Exception) -> Reply:
        # The sender form's fields share names with the main form; '_form' stays the page-top banner.
        found = {**_sender_errors(), **errors_of(exc, g.lang, SENDER_FIELDS)}
        errors = {k if k == "_form" else "sr_" + k: v for k, v in found.items()}
        values = {"sr": {k: form.get(k, "") for k in ("sender", "host", "port", "security", "username")}}
        return PAGE.render(values, errors, status=422)

    return save_form("relay.index", edit, refused, log, "sender relay %s saved by %s", form.get("sender"),
                     check=same_server)


@bp.route("/senders/delete", methods=["POST"])
def delete_sender() -> Reply:
    """Remove the sender relay of one sender."""
    sender = request.form.get("sender", "")

    def edit(document: Dict[str, Any]) -> None:
        document["relay"]["sender_relays"] = [s for s in document["relay"]["sender_relays"] if s["sender"] != sender]

    change_document(paths(), edit)
    log.info("sender relay %s deleted by %s", sender, g.caller.user)
    return redirect(url_for("relay.index", done="deleted"))


@bp.route("/test-mail", methods=["POST"])
def test_mail() -> Response:
    """Send a test mail through the relay to the given address."""
    config, error = load_config()
    if config is None:
        return answer(False, error or "", 409)
    try:
        to = as_address("to", request.form.get("to", ""))
    except ConfigError as exc:
        message = field_message(exc, g.lang)
        return answer(False, message, 422, fields={"to": message})
    try:
        result = relay_service.send_test_mail(config, to)
    except Exception as exc:
        return answer(False, explain.test_mail_failed(g.lang, str(exc)))
    log.info("relay test mail to %s requested by %s", to, g.caller.user)
    return answer(True, explain.test_mail_ok(g.lang, str(result)))


