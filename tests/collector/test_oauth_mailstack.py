"""XOAUTH2 against real Dovecot (passdb oauth2) with tokens from the local OAuth2 server (issue 18).

Dovecot asks tests/support/oauthserver.py's introspection endpoint about every token. The tokens
come from that server's device flow, and the Credential is built here by hand, so these tests
depend on nothing but the protocol code: collection over POP3 and IMAP (directly and through
the runner), refusal of an expired, revoked, wrong-scope or clock-skewed token with the reason
Dovecot gave, and an IDLE session the daemon logs in again before its token runs out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import requests

from smartpop.collector import daemon, idle, logins, service, sources
from smartpop.collector.credential import Credential
from smartpop.config.schema import Account, Config
from smartpop.config.secret import Secret
from smartpop.errors import AuthError
from smartpop.paths import Paths
from support.collect import Env, body_of, message
from support.mailstack import MailStack, have_mail_servers
from support.oauthserver import CLIENT_ID, OAuthServer

pytestmark = [pytest.mark.mailstack, pytest.mark.slow]

SCOPE = "https://mail.google.com/"  # what Dovecot's passdb demands (its `scope` setting)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oauth_stack(oauth: OAuthServer) -> Iterator[MailStack]:
    if not have_mail_servers():
        pytest.skip("needs root plus dovecot-core dovecot-pop3d dovecot-imapd postfix openssl")
    stack = MailStack.start(oauth_introspection=f"{oauth.base}/introspect", oauth_scope=SCOPE)
    yield stack
    stack.stop()


@pytest.fixture
def env(oauth_stack: MailStack, oauth: OAuthServer, tmp_path: Path) -> Iterator[Env]:
    environment = Env(oauth_stack, tmp_path)
    # The server's knobs are shared by the module: each test starts from a well-behaved server.
    oauth.access_lifetime, oauth.clock, oauth.clock_offset, oauth.grant_scope = 3600, time.time, 0.0, None
    yield environment
    environment.cleanup()


def sign_in(oauth: OAuthServer, user: str, scope: str = SCOPE) -> Credential:
    """A fresh access token for `user` through the device flow, as the Credential a login gets."""
    oauth.username = user
    started = requests.post(f"{oauth.base}/devicecode", data={"client_id": CLIENT_ID, "scope": scope},
                            timeout=10).json()
    oauth.approve()
    asked = time.time()
    answer = requests.post(f"{oauth.base}/token", timeout=10, data={
        "client_id": CLIENT_ID, "grant_type": DEVICE_GRANT, "device_code": started["device_code"]}).json()
    return Credential("xoauth2", user, Secret(answer["access_token"]), asked + float(answer["expires_in"]))


def _account(env: Env, protocol: str, **over: Any) -> Dict[str, Any]:
    # A wrong password: a login that fell back to it would fail.
    return env.account(protocol=protocol, password="not-the-password-123", **over)


def _parsed(env: Env, doc: Dict[str, Any]) -> Account:
    return env.write_config([doc]).accounts[0]


def _drain_source(account: Account, credential: Credential) -> List[bytes]:
    source = sources.open_source(account, 30, credential)
    got: List[bytes] = []
    try:
        for remote in source.list():
            parts: List[bytes] = []
            source.fetch(remote.ref, parts.append)
            got.append(b"".join(parts))
            source.delete(remote.ref)
        assert source.finish() == []
    finally:
        source.abort()
    return got


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_a_token_collects_byte_identical_and_leaves_nothing(env: Env, oauth: OAuthServer, protocol: str) -> None:
    env.users("anna")
    messages = [message(i, env.addr("anna")) for i in range(1, 4)]
    env.fill(messages)
    account = _parsed(env, _account(env, protocol))
    got = _drain_source(account, sign_in(oauth, env.catchall))
    assert sorted(m.replace(b"\r\n", b"\n") for m in got) == sorted(messages)
    assert env.left_on_provider() == 0


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_the_runner_collects_with_a_token(env: Env, oauth: OAuthServer, protocol: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env.users("anna", "ben")
    messages = [message(1, env.addr("anna")), message(2, env.addr("ben")), message(3, env.addr("anna"))]
    env.fill(messages)
    credential = sign_in(oauth, env.catchall)
    # The grant store and token endpoint are tested elsewhere (tests/oauth); here the token is given
    # to the runner's own credential lookup.
    monkeypatch.setattr(logins, "credential_for", lambda paths, account: credential)
    config = env.write_config([_account(env, protocol)])
    result = service.fetch_all(env.paths, config).results["sammel"]
    assert result.ok and result.collected == 3, result
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in messages[0::2])
    assert [body_of(m) for m in env.local("ben")] == [body_of(messages[1])]
    assert env.left_on_provider() == 0


def _refused(env: Env, protocol: str, credential: Credential) -> str:
    account = _parsed(env, _account(env, protocol))
    with pytest.raises(AuthError) as caught:
        _drain_source(account, credential)
    assert env.left_on_provider() == 1
    text = str(caught.value)
    assert credential.secret.reveal() not in text
    return text


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_an_expired_token_is_refused_with_the_servers_status(env: Env, oauth: OAuthServer, protocol: str) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    oauth.clock = lambda: time.time() - 4000  # issued long ago: expired an hour ... minus 400 s ago
    credential = sign_in(oauth, env.catchall)
    oauth.clock = time.time
    assert "status 401" in _refused(env, protocol, credential)


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_a_revoked_grant_is_refused(env: Env, oauth: OAuthServer, protocol: str) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    credential = sign_in(oauth, env.catchall)
    oauth.revoke_all()
    assert "status 401" in _refused(env, protocol, credential)


def test_a_token_for_another_scope_is_refused(env: Env, oauth: OAuthServer) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    oauth.grant_scope = "https://outlook.office.com/SMTP.Send"
    assert "status 401" in _refused(env, "imap", sign_in(oauth, env.catchall))


def test_clock_skew_within_the_tokens_life_is_harmless_beyond_it_refused(env: Env, oauth: OAuthServer) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    credential = sign_in(oauth, env.catchall)
    oauth.clock_offset = 3700.0  # the checking side's clock is past the token's end
    assert "status 401" in _refused(env, "pop3", credential)
    oauth.clock_offset = 600.0  # ten minutes off, the token still has time left
    assert len(_drain_source(_parsed(env, _account(env, "pop3")), credential)) == 1
    assert env.left_on_provider() == 0


def test_the_password_passdb_does_not_take_a_token_as_password(env: Env, oauth: OAuthServer) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    credential = sign_in(oauth, env.catchall)
    as_password = Credential("password", env.catchall, credential.secret)
    for protocol in ("pop3", "imap"):
        with pytest.raises(AuthError):
            _drain_source(_parsed(env, _account(env, protocol)), as_password)
    assert env.left_on_provider() == 1


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_idle_logs_in_again_before_the_token_runs_out_and_still_pushes(
        env: Env, oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tokens live 6 s; a session logs in again 2 s before its token's end, through
    # logins.credential_for (here: a fresh device-flow token each time).
    oauth.access_lifetime = 6
    monkeypatch.setattr(idle, "RELOGIN_MARGIN", 2.0)
    monkeypatch.setattr(idle, "MIN_LOGIN_LIFE", 1.0)
    issued: List[Credential] = []

    def credential_for(paths: Paths, account: Account) -> Credential:
        issued.append(sign_in(oauth, account.username))
        return issued[-1]

    monkeypatch.setattr(logins, "credential_for", credential_for)  # the runner's and the IDLE re-login's
    relogins: List[float] = []
    original = idle.IdleSession.relogin

    def counted(session: idle.IdleSession, credential: Credential, timeout: float = 60.0) -> idle.IdleSession:
        old = issued[-2].expires_at  # the session's own token (issued[-1] is the new one)
        assert old is not None and time.time() < old, "logged in again only after the token ended"
        relogins.append(time.monotonic())
        return original(session, credential, timeout)

    monkeypatch.setattr(idle.IdleSession, "relogin", counted)
    env.users("anna")
    config: Config = env.write_config([_account(env, "imap", idle=True, interval=3600)])
    handle = daemon.start(env.paths, config)
    try:
        _wait_for(lambda: len(relogins) >= 2, "two logins with a fresh token while waiting in IDLE")
        runs_before = len(issued)
        pushed = message(1, env.addr("anna"))
        env.fill([pushed])
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "the push after the re-logins")
        assert len(issued) > runs_before  # the run the push set off logged in with a token of its own
    finally:
        assert handle.stop(timeout=30)
    assert env.left_on_provider() == 0
    assert [body_of(m) for m in env.local("anna")] == [body_of(pushed)]
