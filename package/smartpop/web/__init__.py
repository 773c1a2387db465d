"""The web backend: a Flask app that only answers requests the DSM CGI vouched for."""

from __future__ import annotations

import hmac
from typing import Optional

from flask import Flask, abort, jsonify, request

from smartpop import __version__
from smartpop.paths import Paths
from smartpop.web.proof import PROOF_HEADER, load_or_create_secret


def create_app(paths: Paths, secret: Optional[str] = None) -> Flask:
    """Build the app; every route requires the CGI's proof header."""
    app = Flask(__name__)
    app.config["SMARTPOP_PATHS"] = paths
    expected = secret if secret is not None else load_or_create_secret(paths)

    @app.before_request
    def require_proof() -> None:
        given = request.headers.get(PROOF_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            abort(403)

    @app.route("/")
    def index():  # type: ignore[no-untyped-def]
        return jsonify({"app": "SmartPop", "version": __version__})

    return app
