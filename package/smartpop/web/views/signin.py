"""The sign-in page of an OAuth2 account: start, poll (device code), paste back (Google), forget, test.

The views only turn requests into calls of web/signin.py and its outcomes into pages, JSON and
redirects in the admin's language; nothing here sees a token, device code or verifier.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

from flask import Blueprint, Flask, Response, abort, current_app, g, redirect, request, url_for

from smartpop.config.schema import render_config
from smartpop.errors import ConfigError, SmartPopError, TemporaryError
from smartpop.log import redact
from smartpop.oauth import providers
from smartpop.web import signin
from smartpop.web.signin import CODES
from smartpop.web.views.accounts import connection_answer
from smartpop.web.views.common import answer, load_config, page, paths, t
from smartpop.web.views.formpage import Reply, reply

log = logging.getLogger(__name__)
bp = Blueprint("signin", __name__, url_prefix="/accounts")


# What the page's registration help names: the consoles as plain text (no links out of the app),
# the exact scopes SmartPop asks for, and where the full steps are.
REGISTER = {"ms_console": "https://entra.microsoft.com",
            "ms_scopes": (providers.MS_POP3_SCOPE, providers.MS_IMAP_SCOPE, providers.MS_OFFLINE_SCOPE),
            "google_console": "https://console.cloud.google.com", "google_scope": providers.GOOGLE_MAIL_SCOPE,
            "docs": "docs/OAUTH2.md"}


def pending_store(app: Flask) -> signin.PendingStore:
    """The app's store of started sign-ins (one per web process)."""
    store: signin.PendingStore = app.extensions.setdefault("smartpop_signins", signin.PendingStore())
    return store


def _store() -> signin.PendingStore:
    return pending_store(current_app)


def _owner() -> str:
    """Who a started sign-in belongs to: this DSM user in this DSM session."""
    return f"{g.caller.user}\n{g.caller.session}"


def _account(name: str) -> Tuple[Dict[str, Any], Optional[str]]:
    """The stored OAuth2 account document `name` (404 otherwise) and its last error."""
    config, _ = load_config()
    if config is None:
        abort(404)
    doc = next((a for a in render_config(config)["accounts"] if a["name"] == name), None)
    if doc is None or doc.get("auth") != "oauth2":
        abort(404)
    from smartpop.collector.statusread import read_account_status

    return doc, read_account_status(paths()).get(name, {}).get("last_error")


def error_text(code: str) -> str:
    """The one-line reason of a failed sign-in in the page's language."""
    return t(f"signin.error.{code if code in CODES else 'failed'}")


def _failure_code(exc: SmartPopError) -> str:
    if isinstance(exc, ConfigError):
        return "app"
    if isinstance(exc, TemporaryError):
        return "unavailable"
    return str(getattr(exc, "code", "")) or "failed"


def _page(doc: Dict[str, Any], last_error: Optional[str], pending: Optional[signin.Pending] = None,
          attempt: str = "", failed: str = "", detail: str = "", status: int = 200) -> Reply:
    oauth = signin.oauth_block(doc)
    public = {"name": doc["name"], "username": doc.get("username", ""), "protocol": doc.get("protocol", ""),
              "provider": oauth.get("provider", ""), "tenant": oauth.get("tenant") or "common"}
    body = page("signin.html", page_title="signin.title", account=public, state=signin.state_of(doc, last_error),
                code=pending.code if pending else None, auth_url=pending.request.url if pending and pending.request
                else "", attempt=attempt, failed=error_text(failed) if failed else "", detail=redact(detail),
                register=REGISTER)
    return reply(body, status)


@bp.route("/<name>/signin", methods=["GET"])
def show(name: str) -> Reply:
    """The sign-in page: the state, the next step, and a started attempt's code or paste field."""
    doc, last_error = _account(name)
    attempt = request.args.get("attempt", "")
    pending = _store().get(attempt, _owner(), name) if attempt else None
    failed = request.args.get("failed", "")
    return _page(doc, last_error, pending, attempt if pending else "", failed if failed in CODES else "")


@bp.route("/<name>/signin/start", methods=["POST"])
def start(name: str) -> Reply:
    """Start a sign-in attempt and show its code (Microsoft) or its address and paste field (Google)."""
    doc, last_error = _account(name)
    try:
        attempt, _ = signin.start(_store(), doc, _owner())
    except ConfigError as exc:
        return _page(doc, last_error, failed="app", detail=str(exc), status=422)
    except SmartPopError as exc:
        return _page(doc, last_error, failed=_failure_code(exc), detail=str(exc), status=502)
    return redirect(url_for("signin.show", name=name, attempt=attempt))


@bp.route("/<name>/signin/poll", methods=["POST"])
def poll(name: str) -> Response:
    """One poll of a device sign-in, for the page script: pending (with the interval), done or failed."""
    doc, _ = _account(name)
    try:
        outcome = signin.poll(_store(), paths(), doc, request.form.get("attempt", ""), _owner())
    except TemporaryError as exc:
        # A network hiccup ends nothing: the page asks again, the code's expiry ends it.
        return answer(True, t("signin.error.unavailable") + " " + str(exc), state="pending", interval=10)
    except SmartPopError as exc:
        return answer(False, error_text(_failure_code(exc)), state="failed")
    if outcome.state == "pending":
        return answer(True, t("signin.waiting"), state="pending", interval=outcome.interval)
    if outcome.state == "done":
        log.info("account %s signed in by %s", name, g.caller.user)
        return answer(True, t("signin.done"), state="done",
                      next=url_for("signin.show", name=name, done="signed_in"))
    return answer(False, error_text(outcome.code), state="failed")


@bp.route("/<name>/signin/paste", methods=["POST"])
def paste(name: str) -> Reply:
    """Redeem the pasted address of a Google sign-in."""
    doc, last_error = _account(name)
    attempt = request.form.get("attempt", "")
    try:
        outcome = signin.finish_paste(_store(), paths(), doc, attempt, _owner(), request.form.get("pasted", ""))
    except SmartPopError as exc:
        outcome = signin.Outcome("failed", code=_failure_code(exc), detail=str(exc))
    if outcome.state == "done":
        log.info("account %s signed in by %s", name, g.caller.user)
        return redirect(url_for("signin.show", name=name, done="signed_in"))
    pending = _store().get(attempt, _owner(), name)
    return _page(doc, last_error, pending, attempt if pending else "", outcome.code, status=422)


@bp.route("/<name>/signin/forget", methods=["POST"])
def forget(name: str) -> Reply:
    """Sign out: forget the stored grant."""
    _account(name)
    signin.forget(paths(), name)
    log.info("grant of account %s removed by %s", name, g.caller.user)
    return redirect(url_for("signin.show", name=name, done="signed_out"))


@bp.route("/<name>/signin/test", methods=["POST"])
def test(name: str) -> Response:
    """Log in with the stored grant and report the answer."""
    _account(name)
    config, error = load_config()
    if config is None:
        return answer(False, error or "", 409)
    return connection_answer(config.account(name))
