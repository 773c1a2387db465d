"""Providers from an account's oauth block: endpoints, tenant, scopes, what is a config error."""

from __future__ import annotations

import pytest

from smartpop.errors import ConfigError
from smartpop.oauth.providers import DEVICE, LOOPBACK, google, microsoft, provider_from_config

GUID = "11111111-2222-3333-4444-555555555555"


def test_microsoft_defaults_to_the_common_tenant_and_the_device_flow() -> None:
    p = provider_from_config({"provider": "microsoft", "client_id": GUID})
    assert p.flow == DEVICE and p.tenant == "common" and not p.needs_secret
    assert p.device_url == "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
    assert p.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert p.scope("pop3") == "https://outlook.office.com/POP.AccessAsUser.All offline_access"
    assert p.scope("imap") == "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
    assert p.client_form() == {"client_id": GUID}


@pytest.mark.parametrize("tenant", ["contoso.onmicrosoft.com", GUID, "organizations", "consumers"])
def test_the_tenant_goes_into_the_endpoints(tenant: str) -> None:
    p = provider_from_config({"provider": "microsoft", "client_id": GUID, "tenant": tenant})
    assert p.token_url == f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"


@pytest.mark.parametrize("tenant", ["../evil", "a/b", "x?y=1", "evil.test#x", "-dash", "a b", "t\nx", "@evil.test"])
def test_a_tenant_that_could_bend_the_url_is_refused(tenant: str) -> None:
    with pytest.raises(ConfigError) as err:
        provider_from_config({"provider": "microsoft", "client_id": GUID, "tenant": tenant})
    assert err.value.key == "oauth.tenant"


def test_google_uses_the_loopback_flow_and_needs_its_secret() -> None:
    p = provider_from_config({"provider": "google", "client_id": "123-abc.apps.googleusercontent.com",
                              "client_secret": "GOCSPX-secret"})
    assert p.flow == LOOPBACK and p.needs_secret
    assert p.auth_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert p.token_url == "https://oauth2.googleapis.com/token"
    assert p.scope("imap") == p.scope("pop3") == "https://mail.google.com/"
    assert p.client_form() == {"client_id": "123-abc.apps.googleusercontent.com", "client_secret": "GOCSPX-secret"}
    assert "GOCSPX" not in repr(p)
    with pytest.raises(ConfigError) as err:
        provider_from_config({"provider": "google", "client_id": "123-abc.apps.googleusercontent.com"})
    assert err.value.key == "oauth.client_secret"


@pytest.mark.parametrize(("block", "key"), [
    ({"provider": "yahoo", "client_id": GUID}, "oauth.provider"),
    ({"client_id": GUID}, "oauth.provider"),
    ({"provider": "microsoft"}, "oauth.client_id"),
    ({"provider": "microsoft", "client_id": "has space"}, "oauth.client_id"),
    ({"provider": "microsoft", "client_id": 5}, "oauth.client_id"),
])
def test_a_broken_block_names_its_key(block: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        provider_from_config(block)
    assert err.value.key == key


def test_an_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        microsoft(GUID).scope("smtp")


def test_endpoint_base_moves_every_endpoint() -> None:
    p = microsoft(GUID, "common", endpoint_base="http://127.0.0.1:9/")
    assert p.device_url == "http://127.0.0.1:9/common/oauth2/v2.0/devicecode"
    g = google("cid", "sec", endpoint_base="http://127.0.0.1:9")
    assert (g.auth_url, g.token_url) == ("http://127.0.0.1:9/o/oauth2/v2/auth", "http://127.0.0.1:9/token")
