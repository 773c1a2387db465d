"""Issue 18 in headless Chromium through the CGI: a Microsoft account signs in by device code on the
page, "Test connection" counts the mail waiting in Dovecot (passdb oauth2 asking the same local
OAuth2 server), `smartpop fetch` collects it, and a revoked grant turns the badge to "sign in again".
The non-browser variant of every step, for both provider kinds, is tests/oauth/test_end_to_end.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
from webrig import Rig

from smartpop.oauth.providers import MS_POP3_SCOPE
from support.browser import Browser
from support.collect import Env, body_of, child_env, message
from support.mailstack import MailStack, have_mail_servers
from support.oauthserver import CLIENT_ID, OAuthServer

pytestmark = [pytest.mark.browser, pytest.mark.mailstack, pytest.mark.slow]


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oauth_stack(oauth: OAuthServer) -> Iterator[MailStack]:
    if not have_mail_servers():
        pytest.skip("needs root plus dovecot-core dovecot-pop3d dovecot-imapd postfix openssl")
    stack = MailStack.start(oauth_introspection=f"{oauth.base}/introspect", oauth_scope=MS_POP3_SCOPE)
    yield stack
    stack.stop()


@pytest.fixture
def env(oauth_stack: MailStack, oauth: OAuthServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    environment = Env(oauth_stack, tmp_path)
    oauth.username = environment.catchall
    # The backend the Rig starts inherits this: its providers talk to the local server.
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", oauth.base)
    yield environment
    environment.cleanup()


@pytest.fixture
def rig(env: Env) -> Iterator[Rig]:
    """The web UI over a config with one Microsoft OAuth2 account on the rig's POP3 TLS port."""
    account = env.account(name="outlook", auth="oauth2", oauth={"provider": "microsoft", "client_id": CLIENT_ID})
    del account["password"]
    document: Dict[str, Any] = {
        "schema_version": 1, "accounts": [account], "local_domains": ["firma.test"], "aliases": {},
        "fallback_recipient": env.fallback, "delivery": {"host": "127.0.0.1", "port": env.stack.smtp_port}}
    environment = Rig(document)
    yield environment
    environment.stop()


def _fetch(rig: Rig, oauth: OAuthServer) -> Tuple[int, str]:
    """`smartpop fetch` on the rig's data dir in a child process."""
    proc = subprocess.run([sys.executable, "-m", "smartpop", "--data", str(rig.paths.data), "fetch"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=child_env({"SMARTPOP_OAUTH_TEST_BASE": oauth.base,
                                         "SMARTPOP_SYNODSMNOTIFY": "/bin/true"}))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def _badge(browser: Browser, rig: Rig) -> str:
    browser.open(rig, "/accounts/")
    return browser.text('tr[data-account="outlook"] .signin-state')


def test_device_sign_in_in_the_browser_then_test_collect_and_revoke(env: Env, oauth: OAuthServer, rig: Rig,
                                                                    browser: Browser) -> None:
    env.users("anna")
    browser.login(rig)
    assert _badge(browser, rig) == "not signed in yet"
    browser.el('tr[data-account="outlook"] a.signin').click()
    browser.wait(lambda: browser.el("#start-signin").is_displayed(), what="sign-in page")
    browser.el("#start-signin").click()
    browser.wait(lambda: browser.el("#user-code").is_displayed(), what="the user code")
    oauth.approve()
    browser.wait(lambda: "Signed in." in browser.text("main"), timeout=40, what="signed in")
    grant = rig.config_document()["accounts"][0]["oauth"]["refresh_token"]
    assert grant in oauth.refresh

    # "Test connection" logs in to Dovecot with a token from the grant and counts without taking.
    mail = [message(1, env.addr("anna")), message(2, env.addr("anna"))]
    env.fill(mail)
    browser.el("#test-signin").click()
    browser.wait(lambda: browser.el("#test-result").is_displayed() and "waiting" in browser.text("#test-result"),
                 timeout=30, what="the test's answer")
    assert "2 message(s) waiting" in browser.text("#test-result")
    browser.shot("signin-mail-test-connection")
    assert env.left_on_provider() == 2

    code, out = _fetch(rig, oauth)
    assert code == 0, out
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in mail)
    assert env.left_on_provider() == 0
    assert _badge(browser, rig) == "signed in"

    oauth.revoke_all()
    env.fill([message(3, env.addr("anna"))])
    code, out = _fetch(rig, oauth)
    lines = [line for line in out.splitlines() if line.startswith("outlook:")]
    assert code == 1 and len(lines) == 1 and lines[0].endswith("sign in again on the Accounts page"), out
    assert env.left_on_provider() == 1
    assert _badge(browser, rig) == "sign in again"
    browser.shot("signin-mail-sign-in-again")
    stored = rig.config_document()["accounts"][0]["oauth"]["refresh_token"]
    for body in rig.host.bodies:
        assert grant.encode() not in body and stored.encode() not in body
