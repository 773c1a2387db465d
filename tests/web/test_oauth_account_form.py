"""The account form's OAuth2 settings (issue 18): an OAuth2 account needs no password, Google's client
secret is write-only like a password, field errors in German and English, and an edit keeps the
stored grant only while the app registration (provider, client ID, tenant) and the server and user
stay the same, because a grant belongs to the registration and mailbox it was made for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest
from flask import Flask
from markupsafe import escape
from test_signin_page import SECRET, Web

from smartpop.config import store
from smartpop.paths import Paths, ensure_data_dir
from smartpop.web import i18n, presets
from smartpop.web.app import create_app
from support.samples import sample_document

TOKEN = "rt-Stored-Grant-0123456789"
GOOGLE_SECRET = "gcs-Form-Secret-42"
FORM = {"protocol": "imap", "security": "ssl", "host": "imap.gmail.com", "port": "993",
        "username": "alice@example.test", "mode": "multidrop", "enabled": "on", "interval": "60", "folder": "INBOX",
        "auth": "oauth2", "provider": "google", "client_id": "1234-abc.apps.googleusercontent.com",
        "tenant": "", "client_secret": ""}


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A config with a signed-in Google account."""
    result = Paths(tmp_path / "data")
    ensure_data_dir(result)
    document = sample_document()
    document["accounts"].append(
        {"name": "gm", "protocol": "imap", "host": "imap.gmail.com", "port": 993, "username": "alice@example.test",
         "auth": "oauth2", "oauth": {"provider": "google", "client_id": FORM["client_id"],
                                     "client_secret": GOOGLE_SECRET, "refresh_token": TOKEN}})
    store.save_document(result, document)
    return result


@pytest.fixture
def app(paths: Paths) -> Flask:
    """The web app over that data dir."""
    return create_app(paths, secret=SECRET)


def _oauth(paths: Paths, name: str) -> Dict[str, Any]:
    document = json.loads(paths.config.read_text())
    account = next(a for a in document["accounts"] if a["name"] == name)
    result: Dict[str, Any] = account.get("oauth", {})
    assert account.get("password", "") == "" or account.get("auth", "password") == "password"
    return result


def test_the_edit_form_shows_no_secret_and_links_the_sign_in(app: Flask) -> None:
    web = Web(app)
    html = web.get("/accounts/gm/edit").get_data(as_text=True)
    assert TOKEN not in html and GOOGLE_SECRET not in html
    assert '<option value="oauth2" selected>' in html and '<option value="google" selected>' in html
    assert 'id="signin-link"' in html and "signed in" in html


def test_an_unchanged_edit_keeps_grant_and_client_secret(app: Flask, paths: Paths) -> None:
    web = Web(app)
    response = web.post("/accounts/gm/edit", dict(FORM, interval="120"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/accounts/?done=saved")  # still signed in: back to the list
    oauth = _oauth(paths, "gm")
    assert oauth["refresh_token"] == TOKEN and oauth["client_secret"] == GOOGLE_SECRET


@pytest.mark.parametrize("change", [{"client_id": "9999-other.apps.googleusercontent.com",
                                     "client_secret": "gcs-New-Secret"},
                                    {"host": "imap.evil.example"}, {"username": "bob@example.test"},
                                    {"protocol": "pop3", "port": "995"}])
def test_a_changed_registration_or_server_drops_the_grant(app: Flask, paths: Paths, change: Dict[str, str]) -> None:
    web = Web(app)
    response = web.post("/accounts/gm/edit", dict(FORM, **change))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/accounts/gm/signin?done=saved")  # sign in anew
    oauth = _oauth(paths, "gm")
    assert oauth["refresh_token"] == ""
    assert TOKEN not in paths.config.read_text()


def test_a_new_client_id_without_its_secret_asks_for_it(app: Flask, paths: Paths) -> None:
    before = paths.config.read_bytes()
    for lang in ("en", "de"):
        web = Web(app, lang=lang)
        response = web.post("/accounts/gm/edit", dict(FORM, client_id="9999-other.apps.googleusercontent.com"))
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        error = re.search(r'id="err-client_secret" role="alert">([^<]*)<', html)
        assert error and error.group(1) == str(escape(i18n.translate(lang, "validation.client_secret_required")))
        assert GOOGLE_SECRET not in html and TOKEN not in html
    assert paths.config.read_bytes() == before


def test_a_new_microsoft_account_needs_no_password(app: Flask, paths: Paths) -> None:
    web = Web(app)
    form = dict(FORM, name="ms", host="outlook.office365.com", provider="microsoft",
                client_id="00000000-aaaa-4bbb-8ccc-000000000001", tenant="")
    response = web.post("/accounts/new", form)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/accounts/ms/signin?done=created")
    oauth = _oauth(paths, "ms")
    assert oauth == {"provider": "microsoft", "client_id": form["client_id"], "tenant": "common",
                     "refresh_token": ""}


@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize("field, value, code", [("client_id", "has spaces in it", "not_a_client_id"),
                                               ("tenant", "evil/../path", "not_a_tenant")])
def test_field_errors_at_the_oauth_fields(app: Flask, paths: Paths, lang: str, field: str, value: str,
                                         code: str) -> None:
    before = paths.config.read_bytes()
    web = Web(app, lang=lang)
    form = dict(FORM, name="ms", host="outlook.office365.com", provider="microsoft",
                client_id="00000000-aaaa-4bbb-8ccc-000000000001")
    form[field] = value
    response = web.post("/accounts/new", form)
    assert response.status_code == 422
    error = re.search(rf'id="err-{field}" role="alert">([^<]*)<', response.get_data(as_text=True))
    assert error and error.group(1) == str(escape(i18n.translate(lang, "validation." + code, value=value)))
    assert paths.config.read_bytes() == before


def test_switching_to_password_drops_the_oauth_settings(app: Flask, paths: Paths) -> None:
    web = Web(app)
    response = web.post("/accounts/gm/edit", dict(FORM, auth="password", password="Pa55-word-now"))
    assert response.status_code == 302, response.get_data(as_text=True)
    document = json.loads(paths.config.read_text())
    account = next(a for a in document["accounts"] if a["name"] == "gm")
    assert "oauth" not in account and "auth" not in account and account["password"] == "Pa55-word-now"


def test_outlook_and_gmail_presets_preselect_oauth2() -> None:
    by_id = {p["id"]: p for p in presets.as_json_ready()}
    assert by_id["outlook"]["oauth"] == "microsoft" and by_id["gmail"]["oauth"] == "google"
    assert by_id["ionos"]["oauth"] == ""
