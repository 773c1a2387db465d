"""`smartpop check` and `smartpop fetch` with OAuth2 accounts: one line per account, exit 1, an alert."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from smartpop.config import grants, store
from smartpop.config.schema import parse_config
from smartpop.oauth import device
from smartpop.oauth.providers import provider_from_config
from smartpop.paths import Paths
from support.oauthserver import CLIENT_ID, USERNAME, OAuthServer
from support.samples import sample_document

ROOT = Path(__file__).resolve().parents[2]
NOT_SIGNED_IN = "outlook: not signed in yet: sign in on the Accounts page"


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def paths(data_dir: Path) -> Paths:
    doc: Dict[str, Any] = sample_document()
    doc["accounts"] = [{"name": "outlook", "protocol": "imap", "host": "127.0.0.1", "port": closed_port(),
                        "username": USERNAME, "auth": "oauth2",
                        "oauth": {"provider": "microsoft", "client_id": CLIENT_ID}}]
    doc["delivery"] = {"host": "127.0.0.1", "port": closed_port()}
    result = Paths(data_dir)
    store.save(result, parse_config(doc))
    return result


def sign_in(server: OAuthServer, paths: Paths) -> str:
    provider = provider_from_config({"provider": "microsoft", "client_id": CLIENT_ID}, endpoint_base=server.base)
    started = device.start(provider, "imap")
    server.approve()
    tokens = device.poll_until_done(provider, started, sleep=lambda _: None)
    grants.save_refresh_token(paths, "outlook", tokens.refresh_token)
    return tokens.refresh_token


def smartpop(paths: Paths, server: OAuthServer, *args: str) -> Tuple[int, str, str]:
    """Run the CLI as the package does; DSM notifications go to a script that records them."""
    notify = paths.data.parent / "synodsmnotify"
    notify.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{paths.data.parent / "alerts.log"}"\necho >> '
                      f'"{paths.data.parent / "alerts.log"}"\n')
    notify.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "package"), SMARTPOP_OAUTH_TEST_BASE=server.base,
               SMARTPOP_SYNODSMNOTIFY=str(notify))
    env.pop("SMARTPOP_DATA", None)
    proc = subprocess.run([sys.executable, "-m", "smartpop", "--data", str(paths.data), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def alerts_sent(paths: Paths) -> str:
    log = paths.data.parent / "alerts.log"
    return log.read_text() if log.exists() else ""


@pytest.mark.parametrize("command", ["check", "fetch"])
def test_not_signed_in_is_one_line_and_exit_1(paths: Paths, server: OAuthServer, command: str) -> None:
    code, out, err = smartpop(paths, server, command)
    assert code == 1, (out, err)
    assert NOT_SIGNED_IN in out.splitlines()
    assert "Traceback" not in err and "configuration" not in err.lower()
    # Being set up is no reason to alarm anyone.
    assert alerts_sent(paths) == "" and server.requests == []


@pytest.mark.parametrize("command", ["check", "fetch"])
def test_a_revoked_grant_is_one_line_exit_1_and_one_alert(paths: Paths, server: OAuthServer, command: str) -> None:
    grant = sign_in(server, paths)
    server.revoke_all()
    code, out, err = smartpop(paths, server, command)
    assert code == 1, (out, err)
    lines = [line for line in out.splitlines() if line.startswith("outlook:")]
    assert len(lines) == 1 and lines[0].endswith("sign in again on the Accounts page"), out
    assert "invalid_grant" in lines[0] and grant not in out + err
    assert "Traceback" not in err
    sent = alerts_sent(paths)
    assert sent.count("Account outlook needs a new sign-in") == 1 and grant not in sent
    # A second run within alerts.repeat_minutes: the line again, the alert not.
    code, out, _ = smartpop(paths, server, command)
    assert code == 1 and any(line.endswith("sign in again on the Accounts page") for line in out.splitlines())
    assert alerts_sent(paths).count("needs a new sign-in") == 1
    state = json.loads((paths.data / "alerts-state.json").read_text())
    assert "sign_in:outlook" in state["sent"]


def test_fetch_refreshes_and_stores_the_rotated_grant_before_connecting(paths: Paths, server: OAuthServer) -> None:
    grant = sign_in(server, paths)
    code, out, err = smartpop(paths, server, "fetch")
    # The mailbox port is closed: the run fails as a connection problem, not as a sign-in one.
    assert code == 1 and "outlook: FAILED:" in out, (out, err)
    assert [r["grant_type"] for r in server.requests if r.get("grant_type") == "refresh_token"] == ["refresh_token"]
    oauth = store.load(paths).account("outlook").oauth
    assert oauth is not None and oauth.refresh_token.reveal() not in ("", grant)
    assert grant not in out + err and alerts_sent(paths) == ""
