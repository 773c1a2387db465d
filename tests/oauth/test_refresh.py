"""Refreshing against the local server: rotation, revocation, skew, and what introspection says."""

from __future__ import annotations

import pytest
import requests

from smartpop.errors import OAuthUnavailable, ProtocolError, SignInRequired
from smartpop.oauth import device
from smartpop.oauth.providers import Provider
from smartpop.oauth.refresh import refresh
from smartpop.oauth.tokens import TokenSet, stored
from support.oauthserver import FakeTime, OAuthServer


def signed_in(server: OAuthServer, ms: Provider, t: FakeTime) -> TokenSet:
    d = device.start(ms, "imap", clock=t.clock)
    server.approve()
    return device.poll_until_done(ms, d, clock=t.clock, sleep=t.sleep)


def introspect(server: OAuthServer, token: str) -> dict:
    return requests.post(f"{server.base}/introspect", data={"token": token}, timeout=10).json()


def test_refresh_with_rotation_replaces_the_refresh_token(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    old = signed_in(server, ms, t)
    t.now += 3400
    new = refresh(ms, old, "imap", clock=t.clock)
    assert new.refresh_token != old.refresh_token and new.access_token != old.access_token
    assert new.expires_at == t.now + 3600 and new.scope == old.scope
    assert server.requests[-1]["scope"] == ms.scope("imap")
    # The old refresh token is spent: whoever kept it must sign in again.
    with pytest.raises(SignInRequired) as err:
        refresh(ms, old, "imap", clock=t.clock)
    assert err.value.code == "revoked"


def test_refresh_without_rotation_keeps_the_stored_token(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    server.rotate = False
    old = signed_in(server, ms, t)
    new = refresh(ms, old, "imap", clock=t.clock)
    again = refresh(ms, new, "imap", clock=t.clock)
    assert old.refresh_token == new.refresh_token == again.refresh_token


def test_a_stored_refresh_token_gets_an_access_token(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    first = signed_in(server, ms, t)
    from_store = stored(first.refresh_token)
    assert from_store.needs_refresh(t.now)
    fresh = refresh(ms, from_store, "imap", clock=t.clock)
    assert introspect(server, fresh.access_token)["active"] is True


def test_revoked_grant_means_sign_in_again(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    tokens = signed_in(server, ms, t)
    assert introspect(server, tokens.access_token)["username"] == server.username
    server.revoke_all()
    assert introspect(server, tokens.access_token) == {"active": False}
    with pytest.raises(SignInRequired) as err:
        refresh(ms, tokens, "imap", clock=t.clock)
    assert err.value.code == "revoked" and "sign in again" in str(err.value)
    assert tokens.refresh_token not in str(err.value)


def test_not_signed_in_yet(ms: Provider) -> None:
    with pytest.raises(SignInRequired) as err:
        refresh(ms, TokenSet("", 0.0, ""), "imap")
    assert err.value.code == "not_signed_in" and str(err.value).startswith("not signed in yet")


@pytest.mark.parametrize(("status", "error"), [(500, OAuthUnavailable), (503, OAuthUnavailable),
                                               (429, OAuthUnavailable), (404, ProtocolError)])
def test_server_trouble_is_retried_later(server: OAuthServer, ms: Provider, status: int, error: type) -> None:
    t = FakeTime()
    tokens = signed_in(server, ms, t)
    server.fail_next = [status]
    with pytest.raises(error):
        refresh(ms, tokens, "imap", clock=t.clock)
    assert refresh(ms, tokens, "imap", clock=t.clock).access_token  # the grant itself is fine


def test_introspection_reports_scope_and_expiry(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    server.clock = t.clock
    server.access_lifetime = 600
    tokens = signed_in(server, ms, t)
    answer = introspect(server, tokens.access_token)
    assert answer["active"] is True and answer["scope"] == ms.scope("imap") and answer["exp"] == int(t.now + 600)
    t.now += 600
    assert introspect(server, tokens.access_token) == {"active": False}
    assert tokens.needs_refresh(t.now)


def test_the_refresh_margin_covers_a_clock_that_runs_ahead(server: OAuthServer, ms: Provider) -> None:
    t = FakeTime()
    server.clock = t.clock
    server.access_lifetime = 3600
    server.clock_offset = 240  # the mail server's clock runs four minutes ahead
    tokens = signed_in(server, ms, t)
    # The last moment SmartPop would still use the token without refreshing:
    t.now = tokens.expires_at - 301
    assert not tokens.needs_refresh(t.now)
    assert introspect(server, tokens.access_token)["active"] is True
    # Past the margin the mail server would refuse it, but SmartPop has refreshed by then.
    server.clock_offset = 400
    assert introspect(server, tokens.access_token) == {"active": False}
    assert tokens.needs_refresh(t.now, margin=400)
