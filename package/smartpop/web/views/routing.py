"""Routing: local domains, aliases, fallback, and the "where would this go?" tester."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Union

from flask import Blueprint, Response, g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from smartpop.collector import service as collector
from smartpop.config.schema import DEFAULT_PORTS, Account, Config, default_of
from smartpop.config.secret import Secret
from smartpop.errors import ConfigError
from smartpop.log import redact
from smartpop.web import explain as say
from smartpop.web.forms import (
    ROUTING_FIELDS,
    FormError,
    aliases_text,
    change_document,
    errors_of,
    parse_aliases,
    parse_lines,
)
from smartpop.web.views.common import load_config, page, paths, t

log = logging.getLogger(__name__)
bp = Blueprint("routing", __name__, url_prefix="/routing")
Reply = Union[str, BaseResponse]
# Pasted headers beyond this size are not headers any more.
MAX_HEADERS = 256 * 1024


def _render(config: Optional[Config], error: Optional[str], values: Dict[str, Any], errors: Dict[str, str],
            result: Optional[Dict[str, Any]] = None, status: int = 200) -> Reply:
    body = page("routing.html", page_title="nav.routing", values=values, errors=errors, result=result,
                accounts=[a.name for a in config.accounts] if config else [], config_error=error)
    return Response(body, status=status) if status != 200 else body


def _values(config: Optional[Config]) -> Dict[str, Any]:
    if config is None:
        return {"local_domains": "", "aliases": "", "fallback_recipient": "", "headers": "", "account": ""}
    return {"local_domains": "\n".join(config.local_domains), "aliases": aliases_text(config.aliases),
            "fallback_recipient": config.fallback_recipient or "", "headers": "", "account": ""}


@bp.route("/")
def index() -> Reply:
    """The routing page."""
    config, error = load_config()
    return _render(config, error, _values(config), {})


@bp.route("/", methods=["POST"])
def save() -> Reply:
    """Save local domains, aliases and the fallback recipient."""
    form = request.form
    try:
        aliases = parse_aliases(form.get("aliases", ""))

        def edit(document: Dict[str, Any]) -> None:
            document["local_domains"] = parse_lines(form.get("local_domains", ""))
            document["aliases"] = aliases
            document["fallback_recipient"] = (form.get("fallback_recipient") or "").strip() or None

        change_document(paths(), edit)
    except (ConfigError, FormError) as exc:
        config, error = load_config()
        values = _values(config)
        values.update({k: form.get(k, "") for k in ("local_domains", "aliases", "fallback_recipient")})
        return _render(config, error, values, errors_of(exc, g.lang, ROUTING_FIELDS), status=422)
    log.info("routing settings changed by %s", g.caller.user)
    return redirect(url_for("routing.index", done="saved"))


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
    config, error = load_config()
    values = _values(config)
    values["headers"] = request.form.get("headers", "")
    values["account"] = request.form.get("account", "")
    if config is None:
        return _render(config, error, values, {}, status=409)
    raw = values["headers"].replace("\r\n", "\n").encode("utf-8", "replace")[:MAX_HEADERS]
    if not raw.strip():
        return _render(config, error, values, {"headers": t("routing.tester.empty")}, status=422)
    # A header block ends at the first empty line; make sure there is one.
    if b"\n\n" not in raw:
        raw = raw.rstrip(b"\n") + b"\n\n"
    decision = collector.explain_routing(config, _tester_account(config, values["account"]), raw)
    result = {"recipients": list(decision.recipients), "rule": decision.rule, "detail": redact(decision.detail),
              "loop": decision.loop, "reason": say.routing_reason(g.lang, decision.rule, decision.recipients,
                                                                  decision.refused, decision.loop)}
    return _render(config, error, values, {}, result=result)
