"""providers.endpoint_base_from_env: the test rigs' loopback-only way to move the endpoints."""

from __future__ import annotations

import logging

import pytest

from smartpop.oauth import providers


@pytest.mark.parametrize(("value", "base"), [
    ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ("http://127.0.0.1:8123/", "http://127.0.0.1:8123"),
    ("http://[::1]:65535", "http://[::1]:65535"),
    ("", ""),
])
def test_loopback_addresses_pass(monkeypatch: pytest.MonkeyPatch, value: str, base: str) -> None:
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", value)
    assert providers.endpoint_base_from_env() == base


@pytest.mark.parametrize("value", [
    "https://127.0.0.1:8123", "http://localhost:8123", "http://127.0.0.2:8123", "http://10.0.0.1:80",
    "http://127.0.0.1", "http://127.0.0.1:0", "http://127.0.0.1:70000", "http://127.0.0.1:80@evil.example",
    "http://127.0.0.1:80/path", "http://127.0.0.1:80\n", "http://[::1]:80.evil.example", "login.microsoftonline.com",
])
def test_anything_else_is_ignored_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture, value: str) -> None:
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", value)
    monkeypatch.setattr(providers, "_warned", set())
    with caplog.at_level(logging.WARNING):
        assert providers.endpoint_base_from_env() == ""
        assert providers.endpoint_base_from_env() == ""
    assert len([r for r in caplog.records if "SMARTPOP_OAUTH_TEST_BASE" in r.getMessage()]) == 1


def test_unset_means_the_real_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTPOP_OAUTH_TEST_BASE", raising=False)
    assert providers.endpoint_base_from_env() == ""
    ms = providers.provider_from_config({"provider": "microsoft", "client_id": "abc"},
                                        endpoint_base=providers.endpoint_base_from_env())
    assert ms.token_url.startswith(providers.MICROSOFT_HOST + "/common/")
