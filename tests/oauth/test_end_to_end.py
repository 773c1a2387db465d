"""Issue 18 end to end, per provider kind: sign in through the Accounts page, collect, outlive a token, get revoked.

One local OAuth2 server (tests/support/oauthserver.py) is both the provider's token endpoint (the
web app and the CLI reach it through SMARTPOP_OAUTH_TEST_BASE) and the introspection address of
Dovecot's oauth2 passdb, so a login succeeds only with an access token that server issued and
still considers alive. Microsoft signs in with the device code over POP3, Google with the
paste-back over IMAP. `smartpop fetch` runs as the package runs it, in a child process.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests
from flask import Flask

from smartpop.config import store
from smartpop.oauth.providers import GOOGLE_MAIL_SCOPE, MS_POP3_SCOPE
from smartpop.paths import Paths
from smartpop.web.app import create_app
from smartpop.web.proof import PROOF_HEADER
from smartpop.web.security import SESSION_HEADER, USER_HEADER, Caller, csrf_token
from support.collect import Env, body_of, message
from support.mailstack import MailStack, have_mail_servers
from support.oauthserver import CLIENT_ID, CLIENT_SECRET, OAuthServer

pytestmark = [pytest.mark.mailstack, pytest.mark.slow]

SECRET = "proof-secret-for-the-end-to-end-tests-0123"
NOT_SIGNED_IN = "not signed in yet: sign in on the Accounts page"
SIGN_IN_AGAIN = "sign in again on the Accounts page"
LIFETIME = 4  # seconds an access token lives: step 5 waits past it
# provider kind -> (protocol, the oauth block's extras, the scope Dovecot demands of its tokens)
KINDS: Dict[str, Tuple[str, Dict[str, str], str]] = {
    "microsoft": ("pop3", {}, MS_POP3_SCOPE),
    "google": ("imap", {"client_secret": CLIENT_SECRET}, GOOGLE_MAIL_SCOPE),
}


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    """The provider kind under test."""
    return str(request.param)


@pytest.fixture(scope="module")
def oauth_stack(oauth: OAuthServer, kind: str) -> Iterator[MailStack]:
    if not have_mail_servers():
        pytest.skip("needs root plus dovecot-core dovecot-pop3d dovecot-imapd postfix openssl")
    # One rig per kind: Dovecot 2.3.19 wants every scope of its `scope` list in a token, so a
    # list of both providers' scopes would refuse both.
    stack = MailStack.start(oauth_introspection=f"{oauth.base}/introspect", oauth_scope=KINDS[kind][2])
    yield stack
    stack.stop()


@pytest.fixture
def env(oauth_stack: MailStack, oauth: OAuthServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    environment = Env(oauth_stack, tmp_path)
    # The server is shared by the module: each test starts from a well-behaved one.
    oauth.access_lifetime, oauth.clock, oauth.clock_offset, oauth.grant_scope = 3600, time.time, 0.0, None
    oauth.rotate, oauth.deny_consent, oauth.slow_downs, oauth.fail_next = True, False, 0, []
    oauth.username = environment.catchall  # the mailbox the grant is for (Dovecot's login name)
    oauth.requests.clear()
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", oauth.base)
    yield environment
    environment.cleanup()


class Web:
    """The web app over the test's data dir, as one DSM admin session (proof header and CSRF token)."""

    def __init__(self, paths: Paths) -> None:
        self.app: Flask = create_app(paths, secret=SECRET)
        self.client = self.app.test_client()
        self.headers = {PROOF_HEADER: SECRET, USER_HEADER: "admin", SESSION_HEADER: "dsm-session-e2e",
                        "Accept-Language": "en"}
        self.csrf = csrf_token(SECRET, Caller(user="admin", session="dsm-session-e2e"))
        self.bodies: List[str] = []

    def get(self, path: str) -> Any:
        """GET with the proof."""
        response = self.client.get(path, headers=self.headers)
        self.bodies.append(response.get_data(as_text=True))
        return response

    def post(self, path: str, data: Dict[str, str]) -> Any:
        """POST with the proof and the CSRF token."""
        response = self.client.post(path, data=dict(data, csrf_token=self.csrf), headers=self.headers)
        self.bodies.append(response.get_data(as_text=True))
        return response


def _write_config(env: Env, oauth: OAuthServer, kind: str) -> str:
    """config.json with one OAuth2 account of `kind` on the rig's TLS port, not signed in; its name."""
    protocol, extras, _ = KINDS[kind]
    oauth.client_secret = extras.get("client_secret", "")  # Google's token endpoint wants the secret
    doc = env.account(name=kind, protocol=protocol, auth="oauth2",
                      oauth={"provider": kind, "client_id": CLIENT_ID, **extras})
    del doc["password"]
    env.write_config([doc])
    store.save(env.paths, store.load(env.paths))  # the store's own bytes and mode
    return kind


def _fetch(env: Env, oauth: OAuthServer) -> Tuple[int, str]:
    """`smartpop fetch` in a child process; DSM notifications go to a script that records them."""
    notify = env.data / "synodsmnotify"
    log = env.data / "alerts.log"
    notify.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{log}"\necho >> "{log}"\n')
    notify.chmod(0o755)
    proc = env.run_cli("fetch", env={"SMARTPOP_OAUTH_TEST_BASE": oauth.base, "SMARTPOP_SYNODSMNOTIFY": str(notify)},
                       timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


def _alerts(env: Env) -> str:
    log = env.data / "alerts.log"
    return log.read_text() if log.exists() else ""


def _stored_grant(env: Env, name: str) -> str:
    document = json.loads(env.paths.config.read_text())
    account = next(a for a in document["accounts"] if a["name"] == name)
    return str(account["oauth"]["refresh_token"])


def _sign_in_microsoft(web: Web, oauth: OAuthServer, name: str) -> None:
    """The device code: the page shows the code, the user approves it, the page's polling stores the grant."""
    started = web.post(f"/accounts/{name}/signin/start", {})
    assert started.status_code == 302, started.get_data(as_text=True)
    html = web.get(started.headers["Location"]).get_data(as_text=True)
    attempt = re.search(r'data-attempt="([^"]+)"', html)
    (user_code,) = [entry["user_code"] for entry in oauth.device.values()]
    assert attempt and f">{user_code}<" in html
    assert web.post(f"/accounts/{name}/signin/poll", {"attempt": attempt.group(1)}).get_json()["state"] == "pending"
    oauth.approve()
    done = web.post(f"/accounts/{name}/signin/poll", {"attempt": attempt.group(1)}).get_json()
    assert done["state"] == "done", done


def _sign_in_google(web: Web, oauth: OAuthServer, name: str) -> None:
    """The paste-back: follow the page's link to the consent screen, paste the redirected address back."""
    started = web.post(f"/accounts/{name}/signin/start", {})
    assert started.status_code == 302, started.get_data(as_text=True)
    html = web.get(started.headers["Location"]).get_data(as_text=True)
    attempt = re.search(r'name="attempt" value="([^"]+)"', html)
    link = re.search(r'id="auth-link" href="([^"]+)"', html)
    assert attempt and link
    consent = requests.get(link.group(1).replace("&amp;", "&"), allow_redirects=False, timeout=10)
    redirected = consent.headers["Location"]
    assert redirected.startswith("http://127.0.0.1/?") and "code=" in redirected
    done = web.post(f"/accounts/{name}/signin/paste", {"attempt": attempt.group(1), "pasted": redirected})
    assert done.status_code == 302 and done.headers["Location"].endswith("done=signed_in")


def _grants_used(oauth: OAuthServer, grant_type: str) -> int:
    return sum(1 for r in oauth.requests if r["path"] == "token" and r.get("grant_type") == grant_type)


def _badge(web: Web) -> List[str]:
    return re.findall(r'signin-state">([^<]+)<', web.get("/accounts/").get_data(as_text=True))


def test_sign_in_collect_outlive_the_token_and_get_revoked(env: Env, oauth: OAuthServer, kind: str) -> None:
    env.users("anna")
    oauth.access_lifetime = LIFETIME
    name = _write_config(env, oauth, kind)
    web = Web(env.paths)

    # 1-2. Not signed in: one line, exit 1, nobody alarmed, the provider never asked.
    code, out = _fetch(env, oauth)
    assert code == 1 and f"{name}: {NOT_SIGNED_IN}" in out.splitlines(), out
    assert _alerts(env) == "" and oauth.requests == []
    assert _badge(web) == ["not signed in yet"]

    # 3. Sign in through the page: the grant lands in config.json (0600) and nothing else changes.
    before = env.paths.config.read_bytes()
    (_sign_in_microsoft if kind == "microsoft" else _sign_in_google)(web, oauth, name)
    grant = _stored_grant(env, name)
    assert grant in oauth.refresh and oauth.refresh[grant]["active"]
    assert stat.S_IMODE(os.stat(env.paths.config).st_mode) == 0o600
    assert env.paths.config.read_bytes().replace(grant.encode(), b"") == before
    assert _badge(web) == ["signed in"]
    first = [message(1, env.addr("anna")), message(2, env.addr("anna"))]
    env.fill(first)
    tested = web.post(f"/accounts/{name}/signin/test", {}).get_json()
    assert tested["ok"] and "2 message(s) waiting" in tested["message"], tested
    assert env.left_on_provider() == 2  # the test only counted

    # 4. Collect: byte-identical bodies in the local mailbox, nothing left on the provider.
    code, out = _fetch(env, oauth)
    assert code == 0, out
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in first)
    assert env.left_on_provider() == 0

    # 5. Token expiry: the access token of that run dies; the next run refreshes and still collects.
    refreshes = _grants_used(oauth, "refresh_token")
    lived = list(oauth.access)
    time.sleep(max(0.0, max(oauth.access[t]["exp"] for t in lived) - time.time()) + 0.5)
    assert all(not requests.post(f"{oauth.base}/introspect", data={"token": t}, timeout=10).json()["active"]
               for t in lived)
    second = message(3, env.addr("anna"))
    env.fill([second])
    code, out = _fetch(env, oauth)
    assert code == 0, out
    assert _grants_used(oauth, "refresh_token") == refreshes + 1
    rotated = _stored_grant(env, name)
    assert rotated != grant and oauth.refresh[rotated]["active"] and not oauth.refresh[grant]["active"]
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in [*first, second])
    assert env.left_on_provider() == 0
    assert _alerts(env) == ""

    # 6. Revoked: one line, exit 1, the mail stays on the provider, one alert, the badge says so.
    oauth.revoke_all()
    third = message(4, env.addr("anna"))
    env.fill([third])
    code, out = _fetch(env, oauth)
    assert code == 1, out
    lines = [line for line in out.splitlines() if line.startswith(f"{name}:")]
    assert len(lines) == 1 and lines[0].endswith(SIGN_IN_AGAIN), out
    assert rotated not in out
    assert env.left_on_provider() == 1
    assert len(env.local("anna")) == 3
    assert _alerts(env).count(f"Account {name} needs a new sign-in") == 1
    assert _badge(web) == ["sign in again"]
    for body in web.bodies:
        assert grant not in body and rotated not in body
