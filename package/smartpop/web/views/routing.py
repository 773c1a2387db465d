"""Routing: local domains, aliases, fallback, and the "where would this go?" tester."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from flask import Blueprint, g, request

from smartpop.collector import service as collector
from smartpop.config.schema import DEFAULT_PORTS, Account, Config, default_of
from smartpop.config.secret import Secret
from smartpop.log import redact
from smartpop.web import explain as say
from smartpop.web.forms import (
    ROUTING_FIELDS,
    FormError,
    aliases_text,
    errors_of,
    parse_aliases,
    parse_lines,
)
from smartpop.web.views.common import load_config, t
from smartpop.web.views.formpage import Reply, SettingsPage, save_form

log = logging.getLogger(__name__)
bp = Blueprint("routing", __name__, url_prefix="/routing")
# Pasted headers beyond this size are not headers any more.
MAX_HEADERS = 256 * 1024


def _values(config: Optional[Config]) -> Dict[str, Any]:
    """The routing form's values from the stored config, and the tester's empty fields."""
    if config is None:
        return {"local_domains": "", "aliases": "", "fallback_recipient": "", "headers": "", "account": ""}
    return {"local_domains": "\n".join(config.local_domains), "aliases": aliases_text(config.aliases),
            "fallback_recipient": config.fallback_recipient or "", "headers": "", "account": ""}


PAGE = SettingsPage("routing.html", "nav.routing", "values", _values,
                    lambda config: {"accounts": [a.name for a in config.accounts] if config else [], "result": None})


@bp.route("/")
def index() -> Reply:
    """The routing page."""
    return PAGE.render()


@bp.route("/", methods=["POST"])
def save() -> Reply:
    """Save local domains, aliases and the fallback recipient."""
    form = request.form

    def refused(exc: Exception) -> Reply:
        values = {k: form.get(k, "") for k in ("local_domains", "aliases", "fallback_recipient")}
        return PAGE.render(values, errors_of(exc, g.lang, ROUTING_FIELDS), status=422)

    try:
        aliases = parse_aliases(form.get("aliases", ""))
    except FormError as exc:
        return refused(exc)

    def edit(document: Dict[str, Any]) -> None:
        document["local_domains"] = parse_lines(form.get("local_domains", ""))
        document["aliases"] = aliases
        document["fallback_recipient"] = (form.get("fallback_recipient") or "").strip() or None

    return save_form("routing.index", edit, refused, log, "routing settings changed by %s")


def _tester_account(config: Config, name: str) -> Account:
    """The chosen account, or a neutral multidrop account when none is configured."""
    for account in config.accounts:
        if account.name == name:
            return account
    protocol, security = default_of(Account, "protocol"), default_of(Account, "security")
    return Account(name="tester", protocol=protocol, host="localhost", port=DEFAULT_PORTS[(protocol, security)],
                   security=security, username="", password=Secret(""))


@bp.route("/explain", methods=["POST"])
def explain() -> Reply:
    """Show where a message with the pasted headers would go, and the rule that decided."""
    loaded = config, error = load_config()
    values = {"headers": request.form.get("headers", ""), "account": request.form.get("account", "")}
    if config is None:
        return PAGE.render(values, status=409, loaded=loaded)
    raw = values["headers"].replace("\r\n", "\n").encode("utf-8", "replace")[:MAX_HEADERS]
    if not raw.strip():
        return PAGE.render(values, {"headers": t("routing.tester.empty")}, status=422, loaded=loaded)
    # A header block ends at the first empty line; make sure there is one.
    if b"\n\n" not in raw:
        raw = raw.rstrip(b"\n") + b"\n\n"
    decision = collector.explain_routing(config, _tester_account(config, values["account"]), raw)
    result = {"recipients": list(decision.recipients), "rule": decision.rule, "detail": redact(decision.detail),
              "loop": decision.loop, "reason": say.routing_reason(g.lang, decision.rule, decision.recipients,
                                                                  decision.refused, decision.loop)}
    return PAGE.render(values, loaded=loaded, result=result)
