"""Google's loopback flow end to end against the local server: consent, paste-back, code redemption."""

from __future__ import annotations

import pytest
import requests

from smartpop.errors import ConfigError, SignInRequired
from smartpop.oauth import codegrant, loopback
from smartpop.oauth.providers import Provider, google
from support.oauthserver import FakeTime, OAuthServer


def consent(req: loopback.AuthRequest) -> str:
    """What the admin's browser ends on after signing in: the redirect address."""
    answer = requests.get(req.url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    return answer.headers["Location"]


def test_sign_in_by_paste_back(gserver: OAuthServer, gg: Provider) -> None:
    t = FakeTime()
    req = loopback.start(gg, "imap")
    pasted = consent(req)
    assert pasted.startswith("http://127.0.0.1/?code=")
    code = loopback.parse_pasted(pasted, req.state)
    tokens = codegrant.redeem(gg, req, code, "imap", clock=t.clock)
    assert tokens.has_scope("https://mail.google.com/") and tokens.refresh_token
    assert tokens.expires_at == t.now + 3600
    sent = gserver.requests[-1]
    assert sent["code_verifier"] == req.verifier and sent["client_secret"] == gg.client_secret
    assert sent["redirect_uri"] == "http://127.0.0.1/"


def test_a_code_is_single_use(gserver: OAuthServer, gg: Provider) -> None:
    req = loopback.start(gg, "imap")
    code = loopback.parse_pasted(consent(req), req.state)
    codegrant.redeem(gg, req, code, "imap")
    with pytest.raises(SignInRequired) as err:
        codegrant.redeem(gg, req, code, "imap")
    assert err.value.code == "bad_code"


def test_a_code_from_another_attempt_fails_pkce(gserver: OAuthServer, gg: Provider) -> None:
    req, other = loopback.start(gg, "imap"), loopback.start(gg, "imap")
    code = loopback.parse_pasted(consent(req), req.state)
    with pytest.raises(SignInRequired) as err:
        codegrant.redeem(gg, other, code, "imap")
    assert err.value.code == "bad_code"
    # and the paste check already catches it by state
    with pytest.raises(SignInRequired) as err:
        loopback.parse_pasted(consent(req), other.state)
    assert err.value.code == "state_mismatch"


def test_refused_consent(gserver: OAuthServer, gg: Provider) -> None:
    gserver.deny_consent = True
    req = loopback.start(gg, "imap")
    with pytest.raises(SignInRequired) as err:
        loopback.parse_pasted(consent(req), req.state)
    assert err.value.code == "access_denied"


def test_a_wrong_client_secret_is_a_config_error(gserver: OAuthServer) -> None:
    bad = google(gserver.client_id, "wrong-secret", endpoint_base=gserver.base)
    req = loopback.start(bad, "imap")
    code = loopback.parse_pasted(consent(req), req.state)
    with pytest.raises(ConfigError):
        codegrant.redeem(bad, req, code, "imap")


def test_no_refresh_token_means_sign_in_again(gserver: OAuthServer, gg: Provider,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    original = gserver._issue

    def without_refresh(scope: str) -> dict:
        answer = original(scope)
        answer.pop("refresh_token")
        return answer

    monkeypatch.setattr(gserver, "_issue", without_refresh)
    req = loopback.start(gg, "imap")
    code = loopback.parse_pasted(consent(req), req.state)
    with pytest.raises(SignInRequired) as err:
        codegrant.redeem(gg, req, code, "imap")
    assert err.value.code == "no_refresh_token"
