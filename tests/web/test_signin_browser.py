"""The OAuth2 sign-in in headless Chromium through the CGI (issue 18), against tests/support/oauthserver.py:
a Microsoft account by device code (the test approves at the server while the page polls) and a
Google account by paste-back (the test follows the consent address itself and pastes where it
ended), each ending with "signed in" on the Accounts page, in English and German; screenshots."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest
import requests
from selenium.webdriver.support.ui import Select
from webrig import Rig

from smartpop.config import grants
from support.browser import Browser, chromium
from support.oauthserver import CLIENT_ID, OAuthServer
from support.samples import sample_document

pytestmark = pytest.mark.browser

GOOGLE_SECRET = "gcs-Browser-Secret-77"
TEXTS = {"en": {"signed_in": "signed in", "not_yet": "not signed in yet", "done": "Signed in."},
         "de": {"signed_in": "angemeldet", "not_yet": "noch nicht angemeldet", "done": "Angemeldet."}}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OAuthServer]:
    """One local authorization server for both kinds (a public client, so Google's secret is not checked
    by it; the test checks that the secret was sent)."""
    instance = OAuthServer().start()
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", instance.base)
    yield instance
    instance.stop()


@pytest.fixture
def oauth_rig(server: OAuthServer) -> Iterator[Rig]:
    """The sample config plus a Microsoft and a Google OAuth2 account, not signed in yet."""
    document: Dict[str, Any] = sample_document()
    document["accounts"] += [
        {"name": "outlook", "protocol": "imap", "host": "outlook.office365.com", "username": "alice@example.test",
         "auth": "oauth2", "oauth": {"provider": "microsoft", "client_id": CLIENT_ID}},
        {"name": "gmail", "protocol": "imap", "host": "imap.gmail.com", "username": "alice@example.test",
         "auth": "oauth2", "oauth": {"provider": "google", "client_id": CLIENT_ID, "client_secret": GOOGLE_SECRET}},
    ]
    environment = Rig(document)
    yield environment
    environment.stop()


def _badge(browser: Browser, rig: Rig, name: str) -> str:
    browser.open(rig, "/accounts/")
    return browser.text(f'tr[data-account="{name}"] .signin-state')


def _sign_in_microsoft(browser: Browser, rig: Rig, server: OAuthServer, lang: str, shot: str) -> None:
    browser.el('tr[data-account="outlook"] a.signin').click()
    browser.wait(lambda: browser.el("#start-signin").is_displayed(), what="sign-in page")
    browser.el("#start-signin").click()
    browser.wait(lambda: browser.el("#user-code").is_displayed(), what="the user code")
    codes = [entry["user_code"] for entry in server.device.values() if entry["state"] == "pending"]
    assert browser.text("#user-code") in codes
    assert browser.el("#verification-link").get_attribute("href") == f"{server.base}/devicelogin"
    assert not browser.overflows()
    browser.shot(shot)
    server.approve()
    browser.wait(lambda: TEXTS[lang]["done"] in browser.text("main"), timeout=40, what="signed in")
    assert browser.text("#signin-state") == TEXTS[lang]["signed_in"]
    assert browser.el("#test-signin").is_displayed()


def _sign_in_google(browser: Browser, rig: Rig, server: OAuthServer, lang: str, shot: str) -> None:
    browser.open(rig, "/accounts/gmail/signin")
    browser.el("#start-signin").click()
    browser.wait(lambda: browser.el("#paste-form").is_displayed(), what="the paste-back screen")
    assert "http://127.0.0.1/" in browser.text("#paste-signin")
    assert not browser.overflows()
    browser.shot(shot)
    consent = browser.el("#auth-link").get_attribute("href")
    assert consent.startswith(f"{server.base}/o/oauth2/v2/auth?")
    ended_on = requests.get(consent, allow_redirects=False, timeout=10).headers["Location"]
    assert ended_on.startswith("http://127.0.0.1/?")
    browser.fill("#f-pasted", ended_on)
    browser.el("#paste-submit").click()
    browser.wait(lambda: TEXTS[lang]["done"] in browser.text("main"), what="signed in")
    assert browser.text("#signin-state") == TEXTS[lang]["signed_in"]
    sent = [r for r in server.requests if r.get("grant_type") == "authorization_code"]
    assert sent and sent[-1].get("client_secret") == GOOGLE_SECRET


def _secrets(rig: Rig, server: OAuthServer) -> List[str]:
    found = list(server.device) + list(server.refresh) + list(server.access) + [GOOGLE_SECRET]
    for form in server.requests:
        found += [form[k] for k in ("code_verifier", "device_code") if form.get(k)]
    for account in rig.config_document()["accounts"]:
        found.append(account.get("oauth", {}).get("refresh_token", ""))
    return [s for s in found if s]


def _round(browser: Browser, rig: Rig, server: OAuthServer, lang: str, suffix: str) -> None:
    """Both sign-ins in one language, from "not signed in yet" to "signed in" on the Accounts page."""
    assert _badge(browser, rig, "outlook") == TEXTS[lang]["not_yet"]
    assert _badge(browser, rig, "gmail") == TEXTS[lang]["not_yet"]
    _sign_in_microsoft(browser, rig, server, lang, "signin-device" + suffix)
    _sign_in_google(browser, rig, server, lang, "signin-paste" + suffix)
    assert _badge(browser, rig, "outlook") == TEXTS[lang]["signed_in"]
    assert _badge(browser, rig, "gmail") == TEXTS[lang]["signed_in"]
    stored = {a["name"]: a.get("oauth", {}).get("refresh_token") for a in rig.config_document()["accounts"]}
    assert stored["outlook"] in server.refresh and stored["gmail"] in server.refresh


def test_sign_in_both_kinds_in_english_and_german(oauth_rig: Rig, server: OAuthServer, browser: Browser) -> None:
    browser.login(oauth_rig)
    _round(browser, oauth_rig, server, "en", "")
    browser.open(oauth_rig, "/accounts/")
    browser.shot("accounts-signed-in")
    for width in (1280, 800):
        browser.viewport(width, 800)
        for name, path in (("accounts", "/accounts/"), ("signed-in", "/accounts/outlook/signin"),
                           ("form", "/accounts/gmail/edit")):
            browser.open(oauth_rig, path)
            assert not browser.overflows(), f"{path} scrolls sideways at {width} px"
            browser.shot(f"signin-{name}-{width}")
    browser.viewport(1000, 700)
    secrets = _secrets(oauth_rig, server)
    for name in ("outlook", "gmail"):
        grants.forget_refresh_token(oauth_rig.paths, name)
    with chromium(lang="de") as german:
        german.login(oauth_rig)
        _round(german, oauth_rig, server, "de", "-de")
    secrets += _secrets(oauth_rig, server)
    assert len(secrets) > 6
    for body in oauth_rig.host.bodies:
        for secret in secrets:
            assert secret.encode() not in body


def test_presets_choose_oauth2_and_the_form_shows_its_fields(oauth_rig: Rig, browser: Browser) -> None:
    browser.login(oauth_rig)
    browser.open(oauth_rig, "/accounts/new")
    assert browser.el("#f-password").is_displayed() and not browser.el("#f-client_id").is_displayed()
    Select(browser.el("#f-preset")).select_by_value("outlook")
    assert browser.el("#f-auth").get_attribute("value") == "oauth2"
    assert browser.el("#f-provider").get_attribute("value") == "microsoft"
    assert browser.el("#f-tenant").is_displayed() and not browser.el("#f-client_secret").is_displayed()
    assert not browser.el("#f-password").is_displayed()
    Select(browser.el("#f-preset")).select_by_value("gmail")
    assert browser.el("#f-provider").get_attribute("value") == "google"
    assert browser.el("#f-client_secret").is_displayed() and not browser.el("#f-tenant").is_displayed()
    browser.fill("#f-name", "firma-gmail")
    browser.fill("#f-username", "info@firma.example")
    browser.fill("#f-client_id", "1234-abc.apps.googleusercontent.com")
    browser.fill("#f-client_secret", "gcs-Typed-In-Browser")
    browser.shot("account-form-oauth")
    browser.el("#save-account").click()
    # Saved and not signed in yet: the form leads on to the account's sign-in page.
    browser.wait(lambda: browser.el("#start-signin").is_displayed(), what="the sign-in page")
    assert "Account created." in browser.text("main") and browser.text("#signin-state") == "not signed in yet"
    assert "firma-gmail" in browser.text("h1")
    saved = next(a for a in oauth_rig.config_document()["accounts"] if a["name"] == "firma-gmail")
    assert saved["auth"] == "oauth2" and saved["oauth"]["client_secret"] == "gcs-Typed-In-Browser"
    browser.open(oauth_rig, "/accounts/firma-gmail/edit")
    assert browser.el("#f-client_secret").get_attribute("value") == ""
    assert "gcs-Typed-In-Browser" not in browser.driver.page_source
    assert json.dumps(saved).count("gcs-Typed-In-Browser") == 1


def test_a_declined_device_sign_in_says_so_and_offers_start_again(oauth_rig: Rig, server: OAuthServer,
                                                                  browser: Browser) -> None:
    browser.login(oauth_rig)
    browser.open(oauth_rig, "/accounts/outlook/signin")
    browser.el("#start-signin").click()
    browser.wait(lambda: browser.el("#user-code").is_displayed(), what="the user code")
    assert not browser.el("#start-again").is_displayed()
    server.decline()
    browser.wait(lambda: browser.el("#start-again").is_displayed(), timeout=40, what="Start again")
    assert browser.text("#device-status") == "The sign-in was declined at the provider."
    browser.shot("signin-declined")
    browser.el("#start-again").click()
    browser.wait(lambda: len(server.device) == 2 and browser.el("#user-code").is_displayed(), what="a new code")
    assert not oauth_rig.config_document()["accounts"][1]["oauth"].get("refresh_token")
