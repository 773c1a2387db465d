"""config.json's OAuth2 keys (issue 18): `auth`, the `oauth` block, their rejections and redaction."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict

import pytest

from smartpop.config import store
from smartpop.config.schema import Account, OAuthSettings, parse_config, render_config
from smartpop.config.secret import Secret
from smartpop.errors import ConfigError
from smartpop.log import RedactingFilter
from smartpop.oauth.providers import provider_from_config
from smartpop.paths import Paths
from support.samples import sample_document

REFRESH = "rt-Refresh.Token_0123456789~abc"
GOOGLE_SECRET = "GOCSPX-google-Client-Secret"


def oauth_document(**oauth: Any) -> Dict[str, Any]:
    """The sample config with its account switched to OAuth2 (Microsoft unless `oauth` says otherwise)."""
    doc = sample_document()
    account = doc["accounts"][0]
    account.pop("password")
    block = {"provider": "microsoft", "client_id": "0a1b2c3d-1111-2222-3333-444455556666", "tenant": "firma.de",
             "refresh_token": REFRESH}
    block.update(oauth)
    account.update(auth="oauth2", oauth={k: v for k, v in block.items() if v is not None})
    return doc


def serialised(doc: Dict[str, Any]) -> bytes:
    return store.serialise(parse_config(doc))


def test_an_oauth2_account_round_trips_byte_for_byte() -> None:
    first = serialised(oauth_document())
    assert serialised(json.loads(first)) == first
    account = json.loads(first)["accounts"][0]
    assert account["auth"] == "oauth2"
    assert account["oauth"] == {"provider": "microsoft", "client_id": "0a1b2c3d-1111-2222-3333-444455556666",
                                "tenant": "firma.de", "refresh_token": REFRESH}
    parsed = parse_config(json.loads(first)).accounts[0]
    assert parsed.oauth == OAuthSettings("microsoft", "0a1b2c3d-1111-2222-3333-444455556666", "firma.de",
                                         Secret(""), Secret(REFRESH))


def test_a_google_account_keeps_its_secret_and_drops_the_tenant() -> None:
    doc = oauth_document(provider="google", client_id="123-abc.apps.googleusercontent.com",
                         client_secret=GOOGLE_SECRET, tenant=None)
    first = serialised(doc)
    oauth = json.loads(first)["accounts"][0]["oauth"]
    assert oauth == {"provider": "google", "client_id": "123-abc.apps.googleusercontent.com",
                     "client_secret": GOOGLE_SECRET, "refresh_token": REFRESH}
    assert serialised(json.loads(first)) == first


def test_an_account_not_signed_in_yet_is_valid_config() -> None:
    account = parse_config(oauth_document(refresh_token=None, tenant=None)).accounts[0]
    assert account.auth == "oauth2" and account.oauth is not None
    assert not account.oauth.refresh_token and account.oauth.tenant == "common"
    assert not account.password
    rendered = render_config(parse_config(oauth_document(refresh_token="")))
    assert rendered["accounts"][0]["oauth"]["refresh_token"] == ""


def test_an_old_config_loads_as_password_accounts_and_is_written_unchanged() -> None:
    doc = sample_document()
    account = parse_config(doc).accounts[0]
    assert account.auth == "password" and account.oauth is None
    rendered = render_config(parse_config(doc))["accounts"][0]
    # The next save of a pre-issue-18 config adds no key: nothing changes for password accounts.
    assert "auth" not in rendered and "oauth" not in rendered
    explicit = sample_document()
    explicit["accounts"][0]["auth"] = "password"
    assert serialised(explicit) == serialised(doc)


def test_an_old_config_file_loads_through_the_store(configured_data_dir: Any) -> None:
    paths = Paths(configured_data_dir)
    before = paths.config.read_bytes()
    config = store.load(paths)
    assert [a.auth for a in config.accounts] == ["password"]
    assert paths.config.read_bytes() == before  # no migration step, no rewrite


def _set(key: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    return lambda d: d["accounts"][0]["oauth"].update({key: value})


REJECTED = [
    (lambda d: d["accounts"][0].pop("oauth"), "accounts[0].oauth", "oauth_required"),
    (lambda d: d["accounts"][0].update(auth="password"), "accounts[0].oauth", "oauth_without_oauth2"),
    (lambda d: d["accounts"][0].update(auth="kerberos"), "accounts[0].auth", "not_a_choice"),
    (lambda d: d["accounts"][0].update(oauth="microsoft"), "accounts[0].oauth", "not_an_object"),
    (_set("provider", "yahoo"), "accounts[0].oauth.provider", "not_a_choice"),
    (_set("colour", "blue"), "accounts[0].oauth.colour", "unknown_setting"),
    (lambda d: d["accounts"][0]["oauth"].pop("client_id"), "accounts[0].oauth.client_id", "missing"),
    (_set("client_id", "abc def"), "accounts[0].oauth.client_id", "not_a_client_id"),
    (_set("client_id", "abc\ndef"), "accounts[0].oauth.client_id", "control_characters"),
    (_set("client_id", "a" * 201), "accounts[0].oauth.client_id", "too_long"),
    (_set("client_id", "ä-id"), "accounts[0].oauth.client_id", "not_a_client_id"),
    (_set("tenant", "firma.de/../evil"), "accounts[0].oauth.tenant", "not_a_tenant"),
    (_set("tenant", "firma.de?x=1"), "accounts[0].oauth.tenant", "not_a_tenant"),
    (_set("tenant", "firma de"), "accounts[0].oauth.tenant", "not_a_tenant"),
    (_set("tenant", "t" * 101), "accounts[0].oauth.tenant", "too_long"),
    (_set("client_id", "abc~def"), "accounts[0].oauth.client_id", "not_a_client_id"),
    (_set("tenant", "-firma.de"), "accounts[0].oauth.tenant", "not_a_tenant"),
    (_set("refresh_token", "rt\nrelayhost=evil"), "accounts[0].oauth.refresh_token", "secret_control_characters"),
    (_set("refresh_token", "rt with space"), "accounts[0].oauth.refresh_token", "secret_control_characters"),
    (_set("refresh_token", 42), "accounts[0].oauth.refresh_token", "secret_not_text"),
    (_set("client_secret", "s\r\ncret"), "accounts[0].oauth.client_secret", "secret_control_characters"),
    (_set("provider", "google"), "accounts[0].oauth.client_secret", "client_secret_required"),
]


@pytest.mark.parametrize(("change", "key", "code"), REJECTED)
def test_bad_oauth_settings_name_the_key(change: Callable[[Dict[str, Any]], None], key: str, code: str) -> None:
    doc = oauth_document()
    change(doc)
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert (info.value.key, info.value.code) == (key, code)
    assert "rt\nrelayhost" not in str(info.value) and "s\r\ncret" not in str(info.value)


@pytest.mark.parametrize("tenant", ["common", "organizations", "firma.de", "0a1b2c3d-1111-2222-3333-444455556666",
                                    "t" * 100])
def test_what_the_config_accepts_the_provider_accepts(tenant: str) -> None:
    """One check for both: an account that loads never fails only at login with a config error."""
    account = parse_config(oauth_document(tenant=tenant, client_id="x" * 200)).accounts[0]
    assert account.oauth is not None
    block = {"provider": "microsoft", "client_id": account.oauth.client_id, "tenant": account.oauth.tenant}
    assert provider_from_config(block).tenant == tenant


def test_microsoft_needs_no_client_secret_but_keeps_one() -> None:
    account = parse_config(oauth_document(client_secret="ms-Secret~1")).accounts[0]
    assert account.oauth is not None and account.oauth.client_secret.reveal() == "ms-Secret~1"


def test_client_secret_and_refresh_token_are_secrets(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(oauth_document(client_secret="ms-Secret~1"))
    assert set(config.secrets()) >= {REFRESH, "ms-Secret~1"}
    text = repr(config) + str(config.accounts[0])
    assert REFRESH not in text and "ms-Secret~1" not in text
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "refresh %s with %s", (REFRESH, "ms-Secret~1"), None)
    RedactingFilter().filter(record)
    assert REFRESH not in record.getMessage() and "ms-Secret~1" not in record.getMessage()


def test_account_is_still_importable_from_schema() -> None:
    from smartpop.config import accountschema

    assert Account is accountschema.Account and OAuthSettings is accountschema.OAuthSettings
