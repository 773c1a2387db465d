"""When an IDLE session with an OAuth2 token logs in again, and what the daemon does when it cannot.

The end-to-end re-login against Dovecot is in test_oauth_mailstack.py; these are the timing
rules of idle.IdleSession and the daemon's answer to SignInRequired, without a server.
"""

from __future__ import annotations

import socket
import time
from typing import Any, List, Optional

import pytest

from smartpop.collector import daemon, idle, logins, service
from smartpop.collector.credential import Credential
from smartpop.collector.mailbox import AccountResult
from smartpop.collector.statusread import read_account_status
from smartpop.config.schema import Account
from smartpop.config.secret import Secret
from smartpop.errors import SignInRequired
from smartpop.paths import Paths
from support.collect import Env

ACCOUNT = Account(name="box", protocol="imap", host="127.0.0.1", port=1, security="none", username="u@p.test",
                  password=Secret("pw-unused"), allow_insecure=True)


class _Source:
    exists = 3


def _session(expires_at: Optional[float]) -> idle.IdleSession:
    return idle.IdleSession(ACCOUNT, _Source(), expires_at)  # type: ignore[arg-type]


def test_a_password_session_is_renewed_at_the_rfc_2177_schedule_only() -> None:
    session = _session(None)
    assert session.due() == session.started + idle.MAX_IDLE - idle.RENEW_MARGIN
    assert not session.needs_login()
    assert session.known == 3


def test_a_token_session_logs_in_again_before_its_token_ends() -> None:
    session = _session(time.time() + 100)
    wanted = session.started + 100 - idle.RELOGIN_MARGIN
    assert abs(session.due() - wanted) < 1.0
    assert session.due() < session.started + 100  # never past the token's end
    assert not session.needs_login()
    session.login_due = time.monotonic() - 0.01
    assert session.needs_login()


def test_a_token_that_ended_already_does_not_make_a_login_loop() -> None:
    session = _session(time.time() - 50)
    assert session.due() == session.started + idle.MIN_LOGIN_LIFE


def test_a_long_lived_token_still_renews_idle_every_29_minutes() -> None:
    session = _session(time.time() + 7200)
    assert session.due() == session.started + idle.MAX_IDLE - idle.RENEW_MARGIN
    assert not session.needs_login()


def _wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.mark.mailstack
def test_sign_in_required_at_relogin_stops_push_and_fails_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first token lets the account wait in IDLE; when it is due again the grant is gone.
    # The account must then poll (status says why), get one run (which records the failure)
    # and not loop: no new session, no burst of runs.
    runs: List[str] = []
    opened: List[socket.socket] = []
    asked: List[str] = []

    def run_account(paths: object, config: object, account: Account, **_: object) -> AccountResult:
        runs.append(account.name)
        if len(runs) == 1:
            return AccountResult(account.name, remaining=0)
        return AccountResult(account.name, ok=False, error="not signed in yet: sign in on the Accounts page")

    def credential_for(paths: Paths, account: Account) -> Credential:
        asked.append(account.name)
        if len(asked) == 1:
            return Credential("xoauth2", account.username, Secret("at-first-token"), time.time() + 0.5)
        raise SignInRequired("the sign-in was revoked: sign in again on the Accounts page", code="revoked")

    class Waiting(daemon.IdleSession):
        def __init__(self, account: Account, credential: Credential) -> None:  # no server behind it
            super().__init__(account, _Source(), credential.expires_at)  # type: ignore[arg-type]
            mine, self._peer = socket.socketpair()  # the peer stays open: nothing to read
            opened.append(mine)
            self._sock = mine

        def fileno(self) -> int:
            return self._sock.fileno()

        def close(self) -> None:
            self._sock.close()
            self._peer.close()

    monkeypatch.setattr(idle, "MIN_LOGIN_LIFE", 0.2)
    monkeypatch.setattr(daemon, "run_account", run_account)
    monkeypatch.setattr(logins, "credential_for", credential_for)
    monkeypatch.setattr(daemon.IdleSession, "open", classmethod(
        lambda cls, account, known=-1, credential=None: Waiting(account, credential)))
    handle = service.start_daemon(env.paths, env.write_config([env.account(protocol="imap", idle=True,
                                                                           interval=3600)]))
    try:
        _wait_for(lambda: len(runs) >= 2, "the run after the failed re-login")
        _wait_for(lambda: "sign in again" in str((read_account_status(env.paths).get("sammel") or {})
                                                  .get("push") or ""), "the status saying why it polls")
        time.sleep(1.0)  # a loop would have made many runs and logins by now
    finally:
        assert handle.stop(timeout=30)
    assert len(runs) == 2 and len(opened) == 1 and len(asked) == 2, (len(runs), len(opened), len(asked))
    assert opened[0].fileno() == -1  # the old session was closed
