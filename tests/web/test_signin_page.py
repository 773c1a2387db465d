"""The OAuth2 sign-in page (issue 18) through Flask's test client against tests/support/oauthserver.py:
the device-code and paste-back flows store the grant in config.json (0600, nothing else changed),
every POST needs the CSRF token, every route the CGI's proof, no token, device code, verifier or
client secret reaches the browser, each failure is one line in German and English, and editing an
account keeps or drops the grant as its app registration and server stay or change."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from webrig import Browserless, Rig

from smartpop.collector.state import Store
from smartpop.config import store
from smartpop.errors import SignInRequired
from smartpop.oauth import providers, refresh, tokens
from smartpop.paths import Paths, ensure_data_dir
from smartpop.web import i18n, signin
from smartpop.web.app import create_app
from smartpop.web.proof import PROOF_HEADER
from smartpop.web.security import SESSION_HEADER, USER_HEADER, Caller, csrf_token
from support.oauthserver import CLIENT_ID, OAuthServer
from support.samples import sample_document

SECRET = "proof-secret-for-the-signin-tests-0123456789"
GOOGLE_SECRET = "gcs-Sign1n-Page-Secret"
CATALOGS = {lang: i18n.catalog(lang) for lang in ("en", "de")}


class Web:
    """The app and one admin session (DSM user and session as the CGI vouches for them)."""

    def __init__(self, app: Flask, session: str = "dsm-session-1", lang: str = "en") -> None:
        self.client: FlaskClient = app.test_client()
        self.headers = {PROOF_HEADER: SECRET, USER_HEADER: "admin", SESSION_HEADER: session,
                        "Accept-Language": lang}
        self.csrf = csrf_token(SECRET, Caller(user="admin", session=session))
        self.bodies: List[str] = []

    def get(self, path: str) -> Any:
        """GET with the proof."""
        response = self.client.get(path, headers=self.headers)
        self.bodies.append(response.get_data(as_text=True))
        return response

    def post(self, path: str, data: Dict[str, str], csrf: bool = True) -> Any:
        """POST with the proof and (unless told otherwise) the CSRF token."""
        form = dict(data, csrf_token=self.csrf) if csrf else dict(data)
        response = self.client.post(path, data=form, headers=self.headers)
        self.bodies.append(response.get_data(as_text=True))
        return response


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OAuthServer]:
    """The local authorization server, which the web app's providers point at."""
    instance = OAuthServer().start()
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", instance.base)
    yield instance
    instance.stop()


def _document() -> Dict[str, Any]:
    document = sample_document()
    document["accounts"] += [
        {"name": "ms", "protocol": "pop3", "host": "outlook.office365.com", "username": "alice@example.test",
         "auth": "oauth2", "oauth": {"provider": "microsoft", "client_id": CLIENT_ID}},
        {"name": "gm", "protocol": "imap", "host": "imap.gmail.com", "username": "alice@example.test",
         "auth": "oauth2", "oauth": {"provider": "google", "client_id": CLIENT_ID, "client_secret": GOOGLE_SECRET}},
    ]
    return document


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A data dir whose config.json the store wrote itself (so its bytes are the store's own)."""
    result = Paths(tmp_path / "data")
    ensure_data_dir(result)
    store.save_document(result, _document())
    return result


@pytest.fixture
def app(paths: Paths) -> Flask:
    """The web app over that data dir."""
    return create_app(paths, secret=SECRET)


def _stored(paths: Paths, name: str) -> Dict[str, Any]:
    document = json.loads(paths.config.read_text())
    return next(a for a in document["accounts"] if a["name"] == name)


def _device_start(web: Web, name: str = "ms") -> Tuple[str, str]:
    """Start a device sign-in: (attempt id, the page's HTML)."""
    response = web.post(f"/accounts/{name}/signin/start", {})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = web.get(response.headers["Location"])
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    attempt = re.search(r'data-attempt="([^"]+)"', html)
    assert attempt, "the page carries the attempt id for its polling"
    return attempt.group(1), html


def _poll(web: Web, attempt: str, name: str = "ms") -> Dict[str, Any]:
    response = web.post(f"/accounts/{name}/signin/poll", {"attempt": attempt})
    result: Dict[str, Any] = response.get_json()
    return result


def _secrets_of(server: OAuthServer) -> List[str]:
    """Everything the flows must keep from the browser: tokens, device codes, verifiers, client secrets."""
    found = list(server.device) + list(server.refresh) + list(server.access) + [GOOGLE_SECRET]
    for form in server.requests:
        found += [form[k] for k in ("code_verifier", "device_code", "client_secret", "refresh_token") if form.get(k)]
    return [s for s in found if s]


def _assert_nothing_secret(web: Web, server: OAuthServer, app: Flask) -> None:
    secrets = _secrets_of(server)
    # The attempts still pending hold verifiers and device codes no request has carried yet.
    for pending in app.extensions["smartpop_signins"]._items.values():
        secrets += [pending.request.verifier] if pending.request else [pending.code.device_code]
    assert GOOGLE_SECRET in secrets and len(secrets) >= 2
    for body in web.bodies:
        for secret in secrets:
            assert secret not in body


def test_device_sign_in_stores_the_grant_and_nothing_else(app: Flask, paths: Paths, server: OAuthServer) -> None:
    web = Web(app)
    before = paths.config.read_bytes()
    assert b'"refresh_token": ""' in before
    listing = web.get("/accounts/").get_data(as_text=True)
    assert re.search(r'signin-state">not signed in yet<', listing)
    attempt, html = _device_start(web)
    (user_code,) = [entry["user_code"] for entry in server.device.values()]
    assert f'id="user-code" class="user-code">{user_code}<' in html
    assert f'href="{server.base}/devicelogin"' in html
    for scope in ("https://outlook.office.com/POP.AccessAsUser.All", "https://outlook.office.com/IMAP.AccessAsUser.All",
                  "offline_access", "Allow public client flows"):
        assert scope in html
    server.slow_downs = 1
    assert _poll(web, attempt) == {"ok": True, "state": "pending", "interval": 10,
                                   "message": CATALOGS["en"]["signin.waiting"]}
    assert _poll(web, attempt)["state"] == "pending"
    server.approve()
    done = _poll(web, attempt)
    assert done["state"] == "done" and done["next"].endswith("/accounts/ms/signin?done=signed_in")
    token = _stored(paths, "ms")["oauth"]["refresh_token"]
    assert token in server.refresh
    assert stat.S_IMODE(os.stat(paths.config).st_mode) == 0o600
    assert paths.config.read_bytes().replace(token.encode(), b"") == before
    page = web.get("/accounts/ms/signin").get_data(as_text=True)
    assert 'id="signin-state">signed in<' in page and 'id="test-signin"' in page
    assert re.search(r'signin-state">signed in<', web.get("/accounts/").get_data(as_text=True))
    # The attempt is spent: polling it again reports the end, and stores nothing.
    assert _poll(web, attempt)["state"] == "failed"
    _assert_nothing_secret(web, server, app)


def test_paste_back_sign_in(app: Flask, paths: Paths, server: OAuthServer) -> None:
    web = Web(app)
    response = web.post("/accounts/gm/signin/start", {})
    assert response.status_code == 302
    html = web.get(response.headers["Location"]).get_data(as_text=True)
    assert "http://127.0.0.1/" in html and 'name="pasted"' in html
    attempt = re.search(r'name="attempt" value="([^"]+)"', html)
    link = re.search(r'id="auth-link" href="([^"]+)"', html)
    assert attempt and link
    url = link.group(1).replace("&amp;", "&")
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["https://mail.google.com/"] and query["code_challenge_method"] == ["S256"]
    assert "code_verifier" not in url
    redirected = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    assert redirected.startswith("http://127.0.0.1/?")
    done = web.post("/accounts/gm/signin/paste", {"attempt": attempt.group(1), "pasted": redirected})
    assert done.status_code == 302 and done.headers["Location"].endswith("done=signed_in")
    stored = _stored(paths, "gm")["oauth"]
    assert stored["refresh_token"] in server.refresh and stored["client_secret"] == GOOGLE_SECRET
    redeemed = [r for r in server.requests if "authorization_code" in json.dumps(r)]
    assert redeemed and GOOGLE_SECRET in json.dumps(redeemed)  # Google's secret went to the token endpoint
    assert CATALOGS["en"]["notice.signed_in"] in web.get(done.headers["Location"]).get_data(as_text=True)
    _assert_nothing_secret(web, server, app)


def _paste_failure(web: Web, server: OAuthServer, kind: str) -> str:
    """The page after a paste that fails in way `kind`."""
    start = web.post("/accounts/gm/signin/start", {})
    html = web.get(start.headers["Location"]).get_data(as_text=True)
    attempt = re.search(r'name="attempt" value="([^"]+)"', html)
    link = re.search(r'id="auth-link" href="([^"]+)"', html)
    assert attempt and link
    url = link.group(1).replace("&amp;", "&")
    server.deny_consent = kind == "access_denied"
    redirected = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    pasted = {"access_denied": redirected, "bad_paste": "no code here at all",
              "state_mismatch": re.sub(r"state=[^&]+", "state=someone-elses", redirected),
              "bad_code": redirected.replace("code=4", "code=4Xnot")}[kind]
    response = web.post("/accounts/gm/signin/paste", {"attempt": attempt.group(1), "pasted": pasted})
    assert response.status_code == 422
    return str(response.get_data(as_text=True))


@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize("kind", ["access_denied", "bad_paste", "state_mismatch", "bad_code"])
def test_paste_failures_are_one_localized_line(app: Flask, paths: Paths, server: OAuthServer, kind: str,
                                               lang: str) -> None:
    web = Web(app, lang=lang)
    before = paths.config.read_bytes()
    html = _paste_failure(web, server, kind)
    assert 'id="signin-error"' in html
    assert str(escape(CATALOGS[lang][f"signin.error.{kind}"])) in html
    assert str(escape(CATALOGS["de" if lang == "en" else "en"][f"signin.error.{kind}"])) not in html
    assert paths.config.read_bytes() == before
    _assert_nothing_secret(web, server, app)


@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize("kind", ["declined", "expired"])
def test_device_failures_are_one_localized_line(app: Flask, paths: Paths, server: OAuthServer, kind: str,
                                                lang: str) -> None:
    web = Web(app, lang=lang)
    before = paths.config.read_bytes()
    attempt, _ = _device_start(web)
    server.decline() if kind == "declined" else server.expire_device()
    answer = _poll(web, attempt)
    assert answer == {"ok": False, "state": "failed", "message": CATALOGS[lang][f"signin.error.{kind}"]}
    assert paths.config.read_bytes() == before


def test_every_error_code_has_both_languages() -> None:
    from smartpop.web.signin import CODES

    for lang in ("en", "de"):
        for code in (*CODES, "failed"):
            assert CATALOGS[lang].get(f"signin.error.{code}"), (lang, code)
    assert all(CATALOGS["en"][f"signin.error.{c}"] != CATALOGS["de"][f"signin.error.{c}"] for c in CODES)


def test_every_post_needs_the_csrf_token(app: Flask, paths: Paths, server: OAuthServer) -> None:
    web = Web(app)
    attempt, _ = _device_start(web)
    server.approve()
    before = paths.config.read_bytes()
    for path, data in (("/accounts/ms/signin/start", {}), ("/accounts/ms/signin/poll", {"attempt": attempt}),
                       ("/accounts/gm/signin/paste", {"attempt": "x", "pasted": "http://127.0.0.1/?code=x"}),
                       ("/accounts/ms/signin/forget", {}), ("/accounts/ms/signin/test", {})):
        assert web.post(path, data, csrf=False).status_code == 403, path
    assert paths.config.read_bytes() == before
    assert _poll(web, attempt)["state"] == "done"  # the refused poll did not spend the attempt


def test_every_route_needs_the_cgis_proof(app: Flask, server: OAuthServer) -> None:
    client = app.test_client()
    for path in ("/accounts/ms/signin", "/accounts/gm/signin"):
        assert client.get(path).status_code == 403
    for path in ("start", "poll", "paste", "forget", "test"):
        response = client.post(f"/accounts/ms/signin/{path}", headers={USER_HEADER: "admin"})
        assert response.status_code == 403
    assert server.requests == []


def test_an_attempt_belongs_to_the_session_that_started_it(app: Flask, paths: Paths, server: OAuthServer) -> None:
    mine = Web(app, session="dsm-session-1")
    attempt, _ = _device_start(mine)
    server.approve()
    other = Web(app, session="dsm-session-2")
    assert _poll(other, attempt)["state"] == "failed"
    assert 'id="user-code"' not in other.get(f"/accounts/ms/signin?attempt={attempt}").get_data(as_text=True)
    assert _stored(paths, "ms")["oauth"]["refresh_token"] == ""
    assert _poll(mine, attempt)["state"] == "done"


def test_forget_removes_the_grant(app: Flask, paths: Paths, server: OAuthServer) -> None:
    web = Web(app)
    attempt, _ = _device_start(web)
    server.approve()
    assert _poll(web, attempt)["state"] == "done"
    response = web.post("/accounts/ms/signin/forget", {})
    assert response.status_code == 302 and response.headers["Location"].endswith("done=signed_out")
    assert _stored(paths, "ms")["oauth"]["refresh_token"] == ""
    assert re.search(r'signin-state">not signed in yet<', web.get("/accounts/").get_data(as_text=True))


def test_a_changed_registration_during_the_sign_in_stores_nothing(app: Flask, paths: Paths,
                                                                  server: OAuthServer) -> None:
    web = Web(app)
    attempt, _ = _device_start(web)
    server.approve()
    document = json.loads(paths.config.read_text())
    document["accounts"][1]["oauth"]["tenant"] = "contoso.example"
    store.save_document(paths, document)
    answer = _poll(web, attempt)
    assert answer["state"] == "failed" and answer["message"] == CATALOGS["en"]["signin.error.changed"]
    assert _stored(paths, "ms")["oauth"]["refresh_token"] == ""


def test_a_revoked_grant_shows_sign_in_again_on_the_accounts_page(app: Flask, paths: Paths,
                                                                   server: OAuthServer) -> None:
    web = Web(app)
    attempt, _ = _device_start(web)
    server.approve()
    assert _poll(web, attempt)["state"] == "done"
    server.revoke_all()
    stored = _stored(paths, "ms")["oauth"]["refresh_token"]
    provider = providers.provider_from_config({"provider": "microsoft", "client_id": CLIENT_ID},
                                              endpoint_base=server.base)
    with pytest.raises(SignInRequired) as failed:
        refresh.refresh(provider, tokens.stored(stored), "pop3")
    assert failed.value.code == "revoked"
    # The account's last error as the collector records a failed run.
    state = Store(paths.state_db)
    try:
        state.run_finished("ms", False, 0, 0, str(failed.value), None)
    finally:
        state.close()
    for lang, text in (("en", "sign in again"), ("de", "erneut anmelden")):
        listing = Web(app, lang=lang).get("/accounts/").get_data(as_text=True)
        assert re.search(rf'signin-state">{text}<', listing), lang


def test_sign_in_states() -> None:
    doc = {"auth": "oauth2", "oauth": {"provider": "microsoft", "client_id": "x", "refresh_token": "rt"}}
    revoked = "the sign-in is no longer valid (invalid_grant: AADSTS70000): sign in again on the Accounts page"
    assert signin.state_of(doc, revoked) == signin.SIGN_IN_AGAIN
    assert signin.state_of(doc, "connection refused") == signin.SIGNED_IN
    assert signin.state_of({"auth": "oauth2", "oauth": {}}, revoked) == signin.NOT_SIGNED_IN


def test_a_password_account_has_no_sign_in_page(app: Flask) -> None:
    web = Web(app)
    assert web.get("/accounts/sammelpostfach/signin").status_code == 404
    assert web.post("/accounts/sammelpostfach/signin/start", {}).status_code == 404
    assert web.get("/accounts/nobody/signin").status_code == 404


@pytest.mark.parametrize("lang", ["en", "de"])
def test_test_connection_without_a_grant_says_sign_in_first(app: Flask, server: OAuthServer, lang: str) -> None:
    answer = Web(app, lang=lang).post("/accounts/ms/signin/test", {}).get_json()
    assert answer == {"ok": False, "message": CATALOGS[lang]["signin.error.not_signed_in"]}
    assert server.requests == []  # nothing asked the provider: there is no grant to use


def test_a_dsm_user_who_is_no_admin_gets_nothing(rig: Rig) -> None:
    # Through the real CGI: the DSM administrators check happens before the backend sees anything.
    anna = Browserless(rig, "anna")
    token = anna.token
    for method, path in (("get", "/accounts/sammelpostfach/signin"), ("post", "/accounts/sammelpostfach/signin/start"),
                         ("post", "/accounts/sammelpostfach/signin/poll")):
        response = getattr(anna, method)(f"{path}?SynoToken={token}")
        assert response.status_code == 403, path
        assert "administrators only" in response.text, path
        assert "sammel" not in response.text and "signin" not in response.text
