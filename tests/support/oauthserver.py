"""A small local OAuth2 authorization server for tests (and, later, for Dovecot's oauth2 passdb).

Paths are matched by their last segment, so both providers' layouts work against one server:
  POST .../devicecode        Microsoft-style device authorization
  POST .../token             grants: device_code, refresh_token, authorization_code (PKCE S256)
  GET  .../auth              the consent screen: answers 302 to redirect_uri with code & state
  POST .../introspect        RFC 7662 (token=...): active, username, scope, exp, client_id
The test steers it through attributes and methods: `approve()`, `decline()`, `expire_device()`,
`slow_downs`, `rotate`, `revoke_all()`, `access_lifetime`, `clock`, `clock_offset`, `grant_scope`,
`fail_next`, `deny_consent`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "00000000-test-4000-8000-smartpop0001"
CLIENT_SECRET = "test-client-secret-not-secret"
USERNAME = "alice@example.test"


class OAuthServer:
    """The server's state; `start()` serves it on a free 127.0.0.1 port in a thread."""

    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = "", username: str = USERNAME) -> None:
        self.client_id = client_id
        self.client_secret = client_secret  # "" = public client (Microsoft); set = Google-style
        self.username = username
        self.access_lifetime = 3600
        self.clock: Callable[[], float] = time.time  # the authorization server's clock (issuing)
        self.clock_offset = 0.0  # seconds the introspection side's clock runs ahead of `clock`
        self.rotate = True  # a refresh answer carries a new refresh token and revokes the old one
        self.slow_downs = 0  # answer this many device polls with slow_down first
        self.grant_scope: Optional[str] = None  # grant this instead of what was asked
        self.deny_consent = False
        self.fail_next: List[int] = []  # HTTP statuses to answer the next requests with
        self.device: Dict[str, Dict[str, Any]] = {}  # device_code -> {state, scope, user_code}
        self.codes: Dict[str, Dict[str, Any]] = {}  # authorization code -> request
        self.access: Dict[str, Dict[str, Any]] = {}  # access token -> {username, scope, exp, active}
        self.refresh: Dict[str, Dict[str, Any]] = {}  # refresh token -> {username, scope, active}
        self.requests: List[Dict[str, str]] = []  # (path, form) of every POST, for assertions
        self.lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self.port = 0

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> OAuthServer:
        """Serve on a free loopback port until stop()."""
        state = self

        class Handler(_Handler):
            server_state = state

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        # A short poll interval: shutdown() waits for it, once per test.
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving (again is fine)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT, the `endpoint_base` for providers."""
        return f"http://127.0.0.1:{self.port}"

    def now(self) -> float:
        """The introspection side's clock: `clock` plus `clock_offset` (clock skew tests)."""
        return self.clock() + self.clock_offset

    # -- knobs ------------------------------------------------------------------------------
    def _set_device(self, state: str) -> None:
        with self.lock:
            for entry in self.device.values():
                if entry["state"] == "pending":
                    entry["state"] = state

    def approve(self) -> None:
        """The user signs in and consents on every pending device code."""
        self._set_device("approved")

    def decline(self) -> None:
        """The user declines every pending device code."""
        self._set_device("declined")

    def expire_device(self) -> None:
        """Every pending device code expires."""
        self._set_device("expired")

    def revoke_all(self) -> None:
        """The admin revokes the grant: every refresh and access token stops working."""
        with self.lock:
            for entry in list(self.refresh.values()) + list(self.access.values()):
                entry["active"] = False

    # -- endpoints --------------------------------------------------------------------------
    def _issue(self, scope: str) -> Dict[str, Any]:
        granted = self.grant_scope if self.grant_scope is not None else scope
        access, refresh = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        self.access[access] = {"username": self.username, "scope": granted,
                               "exp": self.clock() + self.access_lifetime, "active": True}
        self.refresh[refresh] = {"username": self.username, "scope": granted, "active": True}
        return {"token_type": "Bearer", "access_token": access, "refresh_token": refresh,
                "expires_in": self.access_lifetime, "scope": granted}

    def _client_ok(self, form: Dict[str, str]) -> bool:
        if form.get("client_id") != self.client_id:
            return False
        return not self.client_secret or form.get("client_secret") == self.client_secret

    def devicecode(self, form: Dict[str, str]) -> Any:
        """Start a device authorization."""
        if not self._client_ok(form):
            return 400, {"error": "invalid_client", "error_description": "AADSTS700016: unknown application"}
        device_code, user_code = secrets.token_urlsafe(32), secrets.token_hex(4).upper()
        with self.lock:
            self.device[device_code] = {"state": "pending", "scope": form.get("scope", ""), "user_code": user_code}
        return 200, {"device_code": device_code, "user_code": user_code,
                     "verification_uri": f"{self.base}/devicelogin", "expires_in": 900, "interval": 5,
                     "message": f"To sign in, open {self.base}/devicelogin and enter the code {user_code}."}

    def token(self, form: Dict[str, str]) -> Any:
        """The token endpoint: device_code, refresh_token and authorization_code grants."""
        if not self._client_ok(form):
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        grant = form.get("grant_type", "")
        with self.lock:
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                return self._device_grant(form)
            if grant == "refresh_token":
                return self._refresh_grant(form)
            if grant == "authorization_code":
                return self._code_grant(form)
        return 400, {"error": "unsupported_grant_type"}

    def _device_grant(self, form: Dict[str, str]) -> Any:
        entry = self.device.get(form.get("device_code", ""))
        if entry is None:
            return 400, {"error": "bad_verification_code"}
        if self.slow_downs > 0:
            self.slow_downs -= 1
            return 400, {"error": "slow_down"}
        state = entry["state"]
        if state == "pending":
            return 400, {"error": "authorization_pending", "error_description": "AADSTS70016: pending"}
        if state == "declined":
            return 400, {"error": "authorization_declined"}
        if state == "expired":
            return 400, {"error": "expired_token"}
        del self.device[form["device_code"]]
        return 200, self._issue(entry["scope"])

    def _refresh_grant(self, form: Dict[str, str]) -> Any:
        old = form.get("refresh_token", "")
        entry = self.refresh.get(old)
        if entry is None or not entry["active"]:
            return 400, {"error": "invalid_grant", "error_description": "AADSTS70008: the refresh token was revoked"}
        answer = self._issue(entry["scope"])
        answer["scope"] = entry["scope"]
        if self.rotate:
            entry["active"] = False
        else:
            del self.refresh[answer.pop("refresh_token")]
        return 200, answer

    def _code_grant(self, form: Dict[str, str]) -> Any:
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None or entry["redirect_uri"] != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "unknown or spent code"}
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != entry["code_challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        return 200, self._issue(entry["scope"])

    def authorize(self, query: Dict[str, str]) -> str:
        """The consent screen, decided at once: the redirect address the browser would get."""
        target = query.get("redirect_uri", "")
        if self.deny_consent:
            params = {"error": "access_denied", "state": query.get("state", "")}
        else:
            code = "4/" + secrets.token_urlsafe(24)
            with self.lock:
                self.codes[code] = dict(query)
            params = {"code": code, "state": query.get("state", ""), "scope": query.get("scope", "")}
        return f"{target}?{urlencode(params)}"

    def introspect(self, form: Dict[str, str]) -> Any:
        """RFC 7662: is this access token active, for whom and with which scope."""
        with self.lock:
            entry = self.access.get(form.get("token", ""))
            if entry is None or not entry["active"] or entry["exp"] <= self.now():
                return 200, {"active": False}
            return 200, {"active": True, "username": entry["username"], "scope": entry["scope"],
                         "exp": int(entry["exp"]), "client_id": self.client_id, "token_type": "Bearer"}


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: List[float] = []

    def clock(self) -> float:
        """The current fake time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Move the clock on instead of waiting."""
        self.sleeps.append(seconds)
        self.now += seconds


class _Handler(BaseHTTPRequestHandler):
    server_state: OAuthServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, location: str = "") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.endswith("/auth"):
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self._send(302, {}, location=self.server_state.authorize(query))
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        name = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        state.requests.append({"path": name, **form})
        if state.fail_next:
            status = state.fail_next.pop(0)
            self._send(status, {"error": "server_error"} if status >= 500 else {"error_description": "no such page"})
            return
        handlers = {"devicecode": state.devicecode, "token": state.token, "introspect": state.introspect}
        if name not in handlers:
            self._send(404, {"error": "not_found"})
            return
        status, body = handlers[name](form)
        self._send(status, body)
