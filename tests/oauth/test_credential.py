"""collector/logins.py and tokencache.py against the local OAuth2 server: what an account logs in with."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from smartpop.collector.credential import Credential
from smartpop.collector.logins import credential_for
from smartpop.collector.tokencache import TokenCache
from smartpop.config import grants, store
from smartpop.config.schema import Account, parse_config
from smartpop.errors import OAuthUnavailable, SignInRequired
from smartpop.oauth import device
from smartpop.oauth.providers import Provider
from smartpop.paths import Paths
from support.oauthserver import CLIENT_ID, USERNAME, FakeTime, OAuthServer
from support.samples import sample_document


@pytest.fixture
def clock(server: OAuthServer) -> FakeTime:
    t = FakeTime()
    server.clock = t.clock
    return t


@pytest.fixture
def paths(tmp_path: Path, server: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> Paths:
    monkeypatch.setenv("SMARTPOP_OAUTH_TEST_BASE", server.base)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    doc = sample_document()
    doc["accounts"].append({"name": "outlook", "protocol": "imap", "host": "127.0.0.1", "username": USERNAME,
                            "auth": "oauth2", "oauth": {"provider": "microsoft", "client_id": CLIENT_ID}})
    result = Paths(data)
    store.save(result, parse_config(doc))
    return result


def sign_in(server: OAuthServer, ms: Provider, paths: Paths, t: FakeTime) -> str:
    """What the Accounts page does: the device flow, then the refresh token into config.json."""
    started = device.start(ms, "imap", clock=t.clock)
    server.approve()
    tokens = device.poll_until_done(ms, started, clock=t.clock, sleep=t.sleep)
    grants.save_refresh_token(paths, "outlook", tokens.refresh_token)
    return tokens.refresh_token


def outlook(paths: Paths) -> Account:
    return store.load(paths).account("outlook")


def stored_token(paths: Paths) -> str:
    oauth = outlook(paths).oauth
    assert oauth is not None
    return oauth.refresh_token.reveal()


def refreshes(server: OAuthServer) -> List[Dict[str, Any]]:
    return [r for r in server.requests if r.get("grant_type") == "refresh_token"]


def active(server: OAuthServer, credential: Credential) -> bool:
    answer = requests.post(f"{server.base}/introspect", data={"token": credential.secret.reveal()}, timeout=10)
    return bool(answer.json()["active"])


def test_a_password_account_logs_in_with_its_password(paths: Paths) -> None:
    account = store.load(paths).account("sammelpostfach")
    assert credential_for(paths, account) == Credential("password", account.username, account.password)


def test_not_signed_in_yet_asks_for_a_sign_in_without_asking_the_server(paths: Paths, server: OAuthServer) -> None:
    with pytest.raises(SignInRequired) as err:
        credential_for(paths, outlook(paths), TokenCache())
    assert err.value.code == "not_signed_in"
    assert str(err.value) == "not signed in yet: sign in on the Accounts page"
    assert server.requests == []


def test_refresh_rotation_is_stored_and_a_valid_token_reused(paths: Paths, server: OAuthServer, ms: Provider,
                                                             clock: FakeTime) -> None:
    first_grant = sign_in(server, ms, paths, clock)
    cache = TokenCache(clock=clock.clock)
    credential = credential_for(paths, outlook(paths), cache)
    assert credential.mechanism == "xoauth2" and credential.username == USERNAME
    assert credential.expires_at == clock.now + 3600 - 300
    assert active(server, credential) and len(refreshes(server)) == 1
    # The rotated refresh token replaced the spent one in config.json at once.
    assert stored_token(paths) not in ("", first_grant)
    # Valid for a while yet: no request, the same token, whether the account was read before or after.
    clock.now += 3000
    assert credential_for(paths, outlook(paths), cache) == credential
    assert len(refreshes(server)) == 1
    # Inside the margin: a new access token and another rotation stored.
    second_grant = stored_token(paths)
    clock.now += 301
    again = credential_for(paths, outlook(paths), cache)
    assert again.secret != credential.secret and active(server, again)
    assert len(refreshes(server)) == 2 and stored_token(paths) not in (second_grant, first_grant)


def test_a_grant_kept_by_google_stays_as_it_is(paths: Paths, server: OAuthServer, ms: Provider,
                                               clock: FakeTime) -> None:
    server.rotate = False
    grant = sign_in(server, ms, paths, clock)
    before = paths.config.read_bytes()
    credential_for(paths, outlook(paths), TokenCache(clock=clock.clock))
    assert stored_token(paths) == grant and paths.config.read_bytes() == before


def test_a_new_sign_in_is_not_served_the_old_access_token(paths: Paths, server: OAuthServer, ms: Provider,
                                                          clock: FakeTime) -> None:
    sign_in(server, ms, paths, clock)
    cache = TokenCache(clock=clock.clock)
    old = credential_for(paths, outlook(paths), cache)
    sign_in(server, ms, paths, clock)
    new = credential_for(paths, outlook(paths), cache)
    assert new.secret != old.secret and len(refreshes(server)) == 2


def test_a_revoked_grant_asks_to_sign_in_again(paths: Paths, server: OAuthServer, ms: Provider,
                                               clock: FakeTime) -> None:
    sign_in(server, ms, paths, clock)
    cache = TokenCache(clock=clock.clock)
    credential_for(paths, outlook(paths), cache)
    server.revoke_all()
    clock.now += 3500
    with pytest.raises(SignInRequired) as err:
        credential_for(paths, outlook(paths), cache)
    assert err.value.code == "revoked" and str(err.value).endswith("sign in again on the Accounts page")
    # Not remembered as fine: the next attempt asks the server again (and fails again).
    with pytest.raises(SignInRequired):
        credential_for(paths, outlook(paths), cache)
    assert len(refreshes(server)) == 3


def test_an_unreachable_provider_is_temporary(paths: Paths, server: OAuthServer, ms: Provider,
                                              clock: FakeTime) -> None:
    sign_in(server, ms, paths, clock)
    grant = stored_token(paths)
    cache = TokenCache(clock=clock.clock)
    server.fail_next = [503]
    with pytest.raises(OAuthUnavailable):
        credential_for(paths, outlook(paths), cache)
    assert stored_token(paths) == grant
    assert credential_for(paths, outlook(paths), cache).mechanism == "xoauth2"


def test_threads_asking_at_once_share_one_refresh(paths: Paths, server: OAuthServer, ms: Provider,
                                                  clock: FakeTime) -> None:
    sign_in(server, ms, paths, clock)
    cache = TokenCache(clock=clock.clock)
    account = outlook(paths)
    barrier = threading.Barrier(4)
    got: List[Any] = []

    def ask() -> None:
        barrier.wait()
        try:
            got.append(credential_for(paths, account, cache))
        except Exception as exc:  # a second refresh would spend the rotated token: SignInRequired
            got.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(isinstance(c, Credential) for c in got) and len(got) == 4, got
    assert len({c.secret for c in got}) == 1 and len(refreshes(server)) == 1


def test_a_rotation_that_cannot_be_stored_still_logs_in(paths: Paths, server: OAuthServer, ms: Provider,
                                                        clock: FakeTime, caplog: pytest.LogCaptureFixture) -> None:
    sign_in(server, ms, paths, clock)
    account = outlook(paths)
    # The admin deletes the account while a run is under way: the rotated token has nowhere to go.
    config = store.load(paths)
    config.accounts = [a for a in config.accounts if a.name != "outlook"]
    store.save(paths, config)
    with caplog.at_level(logging.ERROR):
        credential = credential_for(paths, account, TokenCache(clock=clock.clock))
    assert active(server, credential)
    assert "could not store the rotated OAuth2 refresh token" in caplog.text
    assert account.oauth is not None and account.oauth.refresh_token.reveal() not in caplog.text
