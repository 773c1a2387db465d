"""Accounts: list, create, edit, enable/disable, delete, and test a connection."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from flask import Blueprint, Response, abort, g, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from smartpop.collector import service as collector
from smartpop.config.schema import (
    AUTHS,
    DEFAULT_PORTS,
    MODES,
    OAUTH_KINDS,
    PROTOCOLS,
    SECURITIES,
    Account,
    Config,
    parse_config,
    render_config,
)
from smartpop.errors import AuthError, ConfigError, ConnectError, SignInRequired, SmartPopError
from smartpop.log import redact
from smartpop.web import explain, presets, signin
from smartpop.web.forms import (
    ACCOUNT_FIELDS,
    ACCOUNT_SERVER,
    ACCOUNT_STANDINS,
    FieldErrors,
    FormError,
    account_document,
    change_document,
    collect_errors,
    errors_of,
    field_message,
    form_message,
    new_account_values,
    require_same_server,
)
from smartpop.web.views.common import answer, load_config, page, paths, t
from smartpop.web.views.formpage import Reply, reply

log = logging.getLogger(__name__)
bp = Blueprint("accounts", __name__, url_prefix="/accounts")


def _stored(name: str) -> Optional[Dict[str, Any]]:
    """The stored account document (with its password, for server-side use only)."""
    config, _ = load_config()
    if config is None:
        return None
    for account in render_config(config)["accounts"]:
        if account["name"] == name:
            result: Dict[str, Any] = account
            return result
    return None


def _public(doc: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What the form may show of an account: everything except the password, client secret and grant."""
    shown = new_account_values()
    if doc:
        shown.update({k: v for k, v in doc.items() if k not in ("password", "oauth")})
        shown["password_set"] = bool(doc.get("password"))
        oauth = signin.oauth_block(doc)
        shown.update({k: oauth.get(k, "") for k in ("provider", "client_id", "tenant")})
        shown["client_secret_set"] = bool(oauth.get("client_secret"))
        shown["auth"] = doc.get("auth") or "password"
        shown["signin_state"] = signin.state_of(doc, None)
    return shown


def _password_used(form: MultiDict[str, str]) -> bool:
    """Whether the posted form logs in with a password that an empty field would take from the store."""
    return form.get("auth") != "oauth2" and not form.get("password")


def _form_page(values: Dict[str, Any], errors: Dict[str, str], is_new: bool, status: int = 200) -> Reply:
    body = page("account_form.html", page_title="accounts.title.new" if is_new else "accounts.title.edit",
                account=values, errors=errors, is_new=is_new, protocols=PROTOCOLS, securities=SECURITIES,
                auths=AUTHS, oauth_kinds=OAUTH_KINDS,
                modes=MODES, presets=presets.as_json_ready(), default_ports=[
                    {"protocol": p, "security": s, "port": port} for (p, s), port in DEFAULT_PORTS.items()])
    return reply(body, status)


@bp.route("/")
def index() -> str:
    """The account list."""
    config, error = load_config()
    states: Dict[str, str] = {}
    if config is not None and any(a.auth == "oauth2" for a in config.accounts):
        from smartpop.collector.statusread import read_account_status

        errors = read_account_status(paths())
        for doc in render_config(config)["accounts"]:
            if doc.get("auth") == "oauth2":
                states[doc["name"]] = signin.state_of(doc, errors.get(doc["name"], {}).get("last_error"))
    return page("accounts.html", page_title="nav.accounts", accounts=config.accounts if config else [],
                config_error=error, signin_states=states)


@bp.route("/new", methods=["GET"])
def new() -> Reply:
    """An empty account form."""
    return _form_page(_public(None), {}, True)


@bp.route("/<name>/edit", methods=["GET"])
def edit(name: str) -> Reply:
    """The form of one account (password never shown)."""
    doc = _stored(name)
    if doc is None:
        abort(404)
    return _form_page(_public(doc), {}, False)


def _all_errors(original: Optional[str], fields: List[str]) -> FieldErrors:
    """Every problem of the posted account form, each at its field (the save stops at the first)."""
    config, _ = load_config()
    if config is None:
        return {}
    document = render_config(config)
    accounts: List[Dict[str, Any]] = document["accounts"]
    stored = next((a for a in accounts if a["name"] == original), None)
    if original and stored is None:
        return {}
    errors: FieldErrors = {}
    form: MultiDict[str, str] = request.form
    try:
        doc = account_document(form, stored)
    except FormError as exc:
        errors[exc.field] = field_message(exc, g.lang)
        form = form.copy()
        form["password"] = ACCOUNT_STANDINS["password"]
        doc = account_document(form, stored)
    if original is None and any(a["name"] == doc["name"] for a in accounts):
        errors["name"] = field_message(FormError("name", "", code="name_taken", value=doc["name"]), g.lang)
        doc["name"] = ACCOUNT_STANDINS["name"]
    if original is None:
        accounts.append(doc)
        index = len(accounts) - 1
    else:
        index = next(i for i, a in enumerate(accounts) if a["name"] == original)
        accounts[index] = doc

    def same_server(after: Config) -> None:
        if original and _password_used(request.form):
            require_same_server(config.account(original), after.account(original), ACCOUNT_SERVER)

    found = collect_errors(document, lambda d: d["accounts"][index], lambda key: key.startswith(f"accounts[{index}]."),
                           fields, ACCOUNT_STANDINS, g.lang, same_server)
    return {**found, **errors}


def _save(original: Optional[str]) -> Reply:
    existing = _stored(original) if original else None
    if original and existing is None:
        abort(404)
    saved: Dict[str, Any] = {}
    try:
        def edit_doc(document: Dict[str, Any]) -> None:
            accounts: List[Dict[str, Any]] = document["accounts"]
            # The password an empty field keeps is read under the store's lock, like the rest.
            stored = next((a for a in accounts if a["name"] == original), None)
            if original and stored is None:
                abort(404)
            doc = account_document(request.form, stored)
            saved.update(doc)
            if original is None:
                if any(a["name"] == doc["name"] for a in accounts):
                    raise FormError("name", f"name: {doc['name']!r} is used already. Fix: choose another name",
                                    code="name_taken", value=doc["name"])
                accounts.append(doc)
            else:
                document["accounts"] = [doc if a["name"] == original else a for a in accounts]

        def same_server(before: Config, after: Config) -> None:
            # Otherwise the stored password would go to the new server on the next fetch.
            if original and _password_used(request.form):
                require_same_server(before.account(original), after.account(original), ACCOUNT_SERVER)

        change_document(paths(), edit_doc, same_server)
    except (ConfigError, FormError) as exc:
        shown = _public(existing)
        shown.update({k: v for k, v in request.form.items() if k not in ("password", "client_secret", "csrf_token")})
        for box in ("enabled", "allow_insecure", "keep_on_server", "idle"):
            shown[box] = box in request.form
        # An existing account's name is not an input, so an error about it goes to the page top.
        fields = list(ACCOUNT_FIELDS) if original is None else [f for f in ACCOUNT_FIELDS if f != "name"]
        # All of them at once, so the admin does not fix one field per round trip.
        errors = {**_all_errors(original, fields), **errors_of(exc, g.lang, fields)}
        return _form_page(shown, errors, original is None, status=422)
    log.info("account %s %s by %s", saved["name"], "created" if original is None else "changed", g.caller.user)
    done = "created" if original is None else "saved"
    if saved.get("auth") == "oauth2" and not signin.oauth_block(saved).get("refresh_token"):
        # Not signed in (yet, or no more after a new registration): the next step is the sign-in.
        return redirect(url_for("signin.show", name=saved["name"], done=done))
    return redirect(url_for("accounts.index", done=done))


@bp.route("/new", methods=["POST"])
def create() -> Reply:
    """Create an account."""
    return _save(None)


@bp.route("/<name>/edit", methods=["POST"])
def update(name: str) -> Reply:
    """Save an edited account (an empty password keeps the stored one for the same server and user)."""
    return _save(name)


@bp.route("/<name>/toggle", methods=["POST"])
def toggle(name: str) -> Reply:
    """Enable or disable an account."""
    state = {"enabled": False}

    def flip(document: Dict[str, Any]) -> None:
        for account in document["accounts"]:
            if account["name"] == name:
                account["enabled"] = not account.get("enabled", True)
                state["enabled"] = account["enabled"]
                return
        abort(404)

    change_document(paths(), flip)
    log.info("account %s %s by %s", name, "enabled" if state["enabled"] else "disabled", g.caller.user)
    return redirect(url_for("accounts.index", done="enabled" if state["enabled"] else "disabled"))


@bp.route("/<name>/delete", methods=["POST"])
def delete(name: str) -> Reply:
    """Delete an account (its collection state stays in the database)."""
    def drop(document: Dict[str, Any]) -> None:
        before = len(document["accounts"])
        document["accounts"] = [a for a in document["accounts"] if a["name"] != name]
        if len(document["accounts"]) == before:
            abort(404)

    change_document(paths(), drop)
    log.info("account %s deleted by %s", name, g.caller.user)
    return redirect(url_for("accounts.index", done="deleted"))


@bp.route("/test", methods=["POST"])
def test() -> Response:
    """Log in with the form's values and report the answer (stored password: same server and user only)."""
    original = request.args.get("original") or None
    config, error = load_config()
    if config is None:
        return answer(False, error or "", 409)
    document = render_config(config)
    existing = next((a for a in document["accounts"] if a["name"] == original), None) if original else None
    try:
        doc = account_document(request.form, existing)
        if original is None:
            doc["name"] = doc["name"] or "new-account"
        document["accounts"] = [a for a in document["accounts"] if a["name"] not in (doc["name"], original)] + [doc]
        account = parse_config(document).account(doc["name"])
        if existing is not None and _password_used(request.form):
            require_same_server(config.account(existing["name"]), account, ACCOUNT_SERVER)
    except (ConfigError, FormError) as exc:
        return answer(False, form_message(exc, g.lang, human=True), 422, fields=errors_of(exc, g.lang, ACCOUNT_FIELDS))
    return connection_answer(account)


def connection_answer(account: Account) -> Response:
    """Log in to `account` once and answer the page script with the outcome in the page's language."""
    try:
        greeting = collector.test_connection(paths(), account, timeout=15.0)
    except SignInRequired as exc:
        return answer(False, t(f"signin.error.{exc.code if exc.code in signin.CODES else 'failed'}"))
    except AuthError as exc:
        return answer(False, explain.connection_failed(g.lang, redact(str(exc)), "auth_failed"))
    except ConnectError as exc:
        return answer(False, explain.connection_failed(g.lang, redact(str(exc)), "connect_failed"))
    except (SmartPopError, OSError) as exc:
        return answer(False, explain.connection_failed(g.lang, redact(str(exc))))
    return answer(True, explain.connection_ok(g.lang, redact(greeting)))
