"""The device-code flow against the local server: happy path, pending and slow_down, the final errors."""

from __future__ import annotations

import pytest

from smartpop.errors import ConfigError, OAuthUnavailable, SignInRequired
from smartpop.oauth import device
from smartpop.oauth.providers import Provider, google, microsoft
from support.oauthserver import FakeTime, OAuthServer

IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"


def test_start_returns_what_the_page_shows(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "imap", clock=t.clock)
    assert d.user_code and d.verification_uri == f"{server.base}/devicelogin"
    assert d.expires_at == t.now + 900 and d.interval == 5 and d.user_code in d.message
    assert d.device_code not in repr(d)
    assert server.requests[-1] == {"path": "devicecode", "client_id": ms.client_id, "scope": IMAP_SCOPE}


def test_happy_path(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "imap", clock=t.clock)
    server.approve()
    tokens = device.poll_until_done(ms, d, clock=t.clock, sleep=t.sleep)
    assert tokens.access_token in server.access and tokens.refresh_token in server.refresh
    assert tokens.expires_at == t.now + 3600 and tokens.has_scope(IMAP_SCOPE)
    assert t.sleeps == [5]


def test_pending_then_slow_down_then_approved(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "pop3", clock=t.clock)
    first = device.poll_once(ms, d, clock=t.clock)
    assert first.status == device.PENDING and first.device.interval == 5 and first.tokens is None
    server.slow_downs = 2
    slower = device.poll_once(ms, first.device, clock=t.clock)
    assert slower.status == device.SLOW_DOWN and slower.device.interval == 10

    polls = []

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        polls.append(seconds)
        if len(polls) == 3:
            server.approve()

    tokens = device.poll_until_done(ms, slower.device, clock=t.clock, sleep=sleep)
    # one more slow_down (10 -> 15), then pending at 15, then approved at 15
    assert polls == [10, 15, 15] and tokens.access_token


def test_declined(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "imap", clock=t.clock)
    server.decline()
    with pytest.raises(SignInRequired) as err:
        device.poll_until_done(ms, d, clock=t.clock, sleep=t.sleep)
    assert err.value.code == "declined"


def test_expired_at_the_provider(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "imap", clock=t.clock)
    server.expire_device()
    with pytest.raises(SignInRequired) as err:
        device.poll_once(ms, d, clock=t.clock)
    assert err.value.code == "expired"


def test_expired_by_our_own_clock_without_asking(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "imap", clock=t.clock)
    asked = len(server.requests)
    with pytest.raises(SignInRequired) as err:
        device.poll_until_done(ms, d, clock=t.clock, sleep=lambda s: t.sleep(1000))
    assert err.value.code == "expired" and len(server.requests) == asked


def test_a_spent_device_code_is_a_fresh_start(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    d = device.start(ms, "imap", clock=t.clock)
    server.approve()
    device.poll_once(ms, d, clock=t.clock)
    with pytest.raises(SignInRequired) as err:
        device.poll_once(ms, d, clock=t.clock)
    assert err.value.code == "bad_code"


def test_a_wrong_scope_is_visible_in_the_token_set(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    server.grant_scope = "https://outlook.office.com/POP.AccessAsUser.All offline_access"
    d = device.start(ms, "imap", clock=t.clock)
    server.approve()
    tokens = device.poll_until_done(ms, d, clock=t.clock, sleep=t.sleep)
    assert not tokens.has_scope(ms.scope("imap"))
    assert tokens.missing_scope(ms.scope("imap")) == ("https://outlook.office.com/IMAP.AccessAsUser.All",)


def test_an_unknown_client_is_a_config_error(server: OAuthServer) -> None:
    p = microsoft("not-the-registered-app", endpoint_base=server.base)
    with pytest.raises(ConfigError) as err:
        device.start(p, "imap")
    assert err.value.key == "oauth.client_id" and "AADSTS700016" in str(err.value)


def test_server_trouble_is_temporary(server: OAuthServer, ms: Provider) -> None:
    server.fail_next = [503]
    with pytest.raises(OAuthUnavailable):
        device.start(ms, "imap")
    d = device.start(ms, "imap")
    server.fail_next = [429]
    with pytest.raises(OAuthUnavailable):
        device.poll_once(ms, d)


def test_an_unreachable_provider_is_temporary(ms: Provider, server: OAuthServer) -> None:
    server.stop()
    with pytest.raises(OAuthUnavailable) as err:
        device.start(ms, "imap")
    assert "127.0.0.1" not in str(err.value)


def test_google_has_no_device_flow_for_mail() -> None:
    with pytest.raises(Exception, match="does not sign in with a device code"):
        device.start(google("c", "s"), "imap")
