"""The web backend's Flask app: it only answers requests the DSM CGI vouched for.

Every request must carry the CGI's proof (or, in dev mode only, the dev cookie); every
state-changing request must also carry the caller's CSRF token. Pages live in views/.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from flask import Flask, Response, abort, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from smartpop.collector.concurrency import Guards
from smartpop.paths import Paths
from smartpop.web import i18n, security
from smartpop.web.jobs import FetchJobs, HealthJobs
from smartpop.web.proof import load_or_create_secret

# The names of the package, as before the app moved here: log lines and Flask's root path
# (templates/, static/ beside this file) stay the same.
log = logging.getLogger("smartpop.web")

SAFE_METHODS = ("GET", "HEAD")
# Strict CSP: all assets come from the package itself (no CDN, no inline script).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'")

WsgiApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _PrefixFromCgi:
    """Mount the app under the path the CGI was called as, so generated URLs go through the CGI."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        base = security.safe_base(environ.get("HTTP_X_SMARTPOP_BASE", ""))
        if base:
            environ["SCRIPT_NAME"] = base
        return self.app(environ, start_response)


def create_app(paths: Paths, secret: Optional[str] = None, dev_token: Optional[str] = None,
               guards: Optional[Guards] = None) -> Flask:
    """Build the app; every route requires the CGI's proof (or the dev token in dev mode)."""
    app = Flask("smartpop.web")
    app.config["SMARTPOP_PATHS"] = paths
    expected = secret if secret is not None else load_or_create_secret(paths)
    app.config["SMARTPOP_SECRET"] = expected
    app.config["SMARTPOP_DEV_TOKEN"] = dev_token
    # Cookies handed out by /_dev/login; the printed token itself opens one session only.
    dev_sessions: List[str] = []
    app.config["SMARTPOP_DEV_SESSIONS"] = dev_sessions
    app.extensions["smartpop_jobs"] = FetchJobs(paths, guards)  # `serve`: the daemon's guards
    app.extensions["smartpop_health_jobs"] = HealthJobs(paths)
    app.wsgi_app = _PrefixFromCgi(app.wsgi_app)  # type: ignore[method-assign]

    _add_guards(app, expected, dev_token, dev_sessions)
    _add_error_pages(app)

    if dev_token:
        _add_dev_login(app, dev_token, dev_sessions)

    from smartpop.web.views import register

    register(app)

    @app.route("/api/ping")
    def ping() -> Response:
        return jsonify({"ok": True, "user": g.caller.user})

    return app


def _add_guards(app: Flask, expected: str, dev_token: Optional[str], dev_sessions: List[str]) -> None:
    """Register the per-request proof and CSRF check, the SynoToken in URLs and the hardening headers."""

    @app.before_request
    def authenticate() -> Optional[Response]:
        if dev_token and request.path == "/_dev/login":
            return None
        caller = security.identify(request, expected, dev_sessions)
        if caller is None:
            abort(403)
        g.caller = caller
        g.lang = i18n.choose(request.accept_languages.best_match(i18n.LANGUAGES))
        if request.method not in SAFE_METHODS and not security.csrf_ok(request, expected, caller):
            log.warning("rejected %s %s from %s: missing or wrong CSRF token", request.method, request.path,
                        caller.user)
            abort(403)
        return None

    @app.url_defaults
    def keep_syno_token(endpoint: str, values: Dict[str, Any]) -> None:
        # Under DSM with CSRF protection every request needs the SynoToken, page loads included.
        caller = g.get("caller")
        if caller is not None and caller.syno_token:
            values.setdefault("SynoToken", caller.syno_token)

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response


def _add_error_pages(app: Flask) -> None:
    """Register the 403, 404/405 and 500 answers."""

    @app.errorhandler(403)
    def forbidden(_error: Exception) -> Response:
        # Deliberately bare: an unauthenticated caller learns nothing about the app.
        return Response("Forbidden\n", status=403, mimetype="text/plain")

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(error: HTTPException) -> Union[str, Response]:
        return _error_page(error.code or 404, "error.not_found")

    @app.errorhandler(InternalServerError)
    def internal_error(error: InternalServerError) -> Union[str, Response]:
        # The details go to the log; the admin's browser gets a page of the app, never a traceback.
        original = getattr(error, "original_exception", None) or error
        log.error("%s %s failed: %s", request.method, request.path, original,
                  exc_info=(type(original), original, original.__traceback__))
        return _error_page(500, "error.internal")


def _error_page(status: int, kind: str) -> Union[str, Response]:
    """A 404/500 answer in the app's look and the caller's language (JSON for the page script)."""
    lang = g.get("lang") or i18n.choose(request.accept_languages.best_match(i18n.LANGUAGES))
    g.lang = lang
    title, text = i18n.translate(lang, kind + ".title"), i18n.translate(lang, kind + ".text")
    wants_json = request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"
    if wants_json or g.get("caller") is None:
        if wants_json:
            response = jsonify({"ok": False, "message": f"{title}. {text}"})
        else:
            response = Response(f"{title}\n{text}\n", mimetype="text/plain")
        response.status_code = status
        return response
    try:
        body = render_template("error.html", page_title=kind + ".title", error_title=title, error_text=text,
                               status=status)
    except Exception:  # a broken template must not turn a 404 into a traceback
        log.exception("the error page itself failed")
        body = f"<!doctype html><title>SmartPop</title><h1>{title}</h1><p>{text}</p>"
    return Response(body, status=status, mimetype="text/html")


def _add_dev_login(app: Flask, dev_token: str, sessions: List[str]) -> None:
    """Dev mode only: /_dev/login?token=… trades the printed token for a session cookie, once."""
    from flask import redirect, url_for

    used = threading.Lock()

    @app.route("/_dev/login")
    def dev_login() -> Any:
        given = request.args.get("token", "")
        # One-time: whoever finds the URL later (shell history, a screenshot, the browser's
        # history) gets nothing from it; restart `serve --dev` for a new one.
        if not security.equal(given, dev_token) or not used.acquire(blocking=False):
            abort(403)
        session = secrets.token_urlsafe(32)
        sessions.append(session)
        response = redirect(url_for("dashboard.index"))
        response.set_cookie(security.DEV_COOKIE, session, httponly=True, samesite="Strict")
        return response
