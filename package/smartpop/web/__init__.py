"""The web backend: a Flask app that only answers requests the DSM CGI vouched for.

Every request must carry the CGI's proof (or, in dev mode only, the dev cookie); every
state-changing request must also carry the caller's CSRF token. Pages live in views/.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Optional

from flask import Flask, Response, abort, g, jsonify, request

from smartpop.paths import Paths
from smartpop.web import i18n, security
from smartpop.web.jobs import FetchJobs
from smartpop.web.proof import load_or_create_secret

log = logging.getLogger(__name__)

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


def create_app(paths: Paths, secret: Optional[str] = None, dev_token: Optional[str] = None) -> Flask:
    """Build the app; every route requires the CGI's proof (or the dev token in dev mode)."""
    app = Flask(__name__)
    app.config["SMARTPOP_PATHS"] = paths
    expected = secret if secret is not None else load_or_create_secret(paths)
    app.config["SMARTPOP_SECRET"] = expected
    app.config["SMARTPOP_DEV_TOKEN"] = dev_token
    app.extensions["smartpop_jobs"] = FetchJobs(paths)
    app.wsgi_app = _PrefixFromCgi(app.wsgi_app)  # type: ignore[method-assign]

    @app.before_request
    def authenticate() -> Optional[Response]:
        if dev_token and request.path == "/_dev/login":
            return None
        caller = security.identify(request, expected, dev_token)
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

    @app.errorhandler(403)
    def forbidden(_error: Exception) -> Response:
        # Deliberately bare: an unauthenticated caller learns nothing about the app.
        return Response("Forbidden\n", status=403, mimetype="text/plain")

    @app.errorhandler(404)
    def not_found(_error: Exception) -> Response:
        return Response("Not found\n", status=404, mimetype="text/plain")

    if dev_token:
        _add_dev_login(app, dev_token)

    from smartpop.web.views import register

    register(app)

    @app.route("/api/ping")
    def ping() -> Response:
        return jsonify({"ok": True, "user": g.caller.user})

    return app


def _add_dev_login(app: Flask, dev_token: str) -> None:
    """Dev mode only: /_dev/login?token=… trades the printed token for a cookie."""
    from flask import redirect, url_for

    @app.route("/_dev/login")
    def dev_login() -> Any:
        given = request.args.get("token", "")
        if not security.equal(given, dev_token):
            abort(403)
        response = redirect(url_for("dashboard.index"))
        response.set_cookie(security.DEV_COOKIE, dev_token, httponly=True, samesite="Strict")
        return response
