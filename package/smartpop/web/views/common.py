"""Helpers every page shares: paths, config loading, translation, rendering, JSON answers."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from flask import Flask, Response, current_app, g, jsonify, render_template, request, url_for

from smartpop.config import store
from smartpop.config.schema import Config
from smartpop.errors import ConfigError
from smartpop.log import redact, register_secrets
from smartpop.paths import Paths
from smartpop.web import i18n, security
from smartpop.web.forms import form_message

NAV = [("dashboard.index", "nav.dashboard"), ("accounts.index", "nav.accounts"), ("routing.index", "nav.routing"),
       ("relay.index", "nav.relay"), ("alerts.index", "nav.alerts"), ("health.index", "nav.health"),
       ("trail.index", "nav.trail"), ("logs.index", "nav.logs")]
# Notices a redirect may ask for (?done=…); anything else is ignored.
NOTICES = {"saved", "deleted", "enabled", "disabled", "created", "signed_in", "signed_out"}
# Texts the page script needs (progress phases, button feedback).
JS_KEYS = ["js.working", "js.copied", "js.copy_failed", "js.confirm_delete", "js.fetch_running", "js.fetch_done",
           "js.fetch_problems", "js.fetch_failed", "js.request_failed", "phase.connect",
           "phase.list", "phase.fetch", "phase.commit", "phase.done", "js.result_ok", "js.result_problem",
           "js.result_failed", "js.result_skipped", "js.health_running", "js.health_done", "js.health_failed",
           "js.health_busy", "health.roundtrip.sending", "signin.waiting", "signin.done"]


# Where DSM serves the package's ui/ dir, which build.sh gives a copy of static/ (ui/static/).
STATIC_DIR = "static"


@lru_cache(maxsize=None)
def _fingerprint(filename: str) -> str:
    """A short digest of a static file, so a browser never keeps an old copy after an upgrade."""
    data = (Path(__file__).resolve().parents[1] / "static" / filename).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def asset(filename: str) -> str:
    """The URL of a static file: under DSM the one DSM serves from ui/static without the CGI.

    DSM links the package's ui/ dir (INFO dsmuidir) to /usr/syno/synoman/webman/3rdparty/SmartPop
    and its web server answers files there itself (Synology Package Developer Guide, "Desktop
    Application" and INFO "dsmuidir"; the app icon in ui/images is served the same way). Only
    index.cgi starts Python, so a page view costs one CGI run, not three (issue 13 §1)."""
    version = _fingerprint(filename)
    base = request.script_root
    if base:
        # SCRIPT_NAME as index.cgi passed it: /webman/3rdparty/SmartPop/index.cgi
        return f"{base.rsplit('/', 1)[0]}/{STATIC_DIR}/{filename}?v={version}"
    return url_for("static", filename=filename, v=version)  # serve --dev: Flask serves it


def paths() -> Paths:
    """The data dir paths of this app."""
    result: Paths = current_app.config["SMARTPOP_PATHS"]
    return result


def t(key: str, **values: Any) -> str:
    """Translate `key` into the caller's language."""
    return i18n.translate(getattr(g, "lang", i18n.DEFAULT), key, **values)


def load_config() -> Tuple[Optional[Config], Optional[str]]:
    """The current config, or (None, error message) when it is missing or invalid."""
    try:
        config = store.load(paths())
    except ConfigError as exc:
        return None, form_message(exc, getattr(g, "lang", i18n.DEFAULT))
    # Whatever the page shows later goes through redact(), which must know every secret.
    register_secrets(config.secrets())
    return config, None


def page(template: str, **context: Any) -> str:
    """Render a page with the shared context."""
    done = request.args.get("done", "")
    context.setdefault("notice", f"notice.{done}" if done in NOTICES else None)
    return render_template(template, **context)


def answer(ok: bool, message: str, status: int = 200, **extra: Any) -> Response:
    """A JSON answer for the page script; the message is redacted."""
    response = jsonify({"ok": ok, "message": redact(message), **extra})
    response.status_code = status
    return response


def install(app: Flask) -> None:
    """Template globals: translation, CSRF token, navigation."""

    # A global (not only a context value) so that imported macros can translate too.
    app.jinja_env.globals["_"] = t
    app.jinja_env.globals["asset"] = asset

    @app.context_processor
    def shared() -> Dict[str, Any]:
        caller = getattr(g, "caller", None)
        token = security.csrf_token(app.config["SMARTPOP_SECRET"], caller) if caller else ""
        lang = getattr(g, "lang", i18n.DEFAULT)
        return {
            "_": t, "lang": lang, "csrf": token, "csrf_field": security.CSRF_FIELD, "nav": NAV,
            "user": caller.user if caller else "", "endpoint": request.endpoint,
            "js_texts": {key: i18n.translate(lang, key) for key in JS_KEYS},
        }
