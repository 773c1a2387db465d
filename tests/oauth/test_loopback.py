"""The loopback flow's sign-in address and every kind of paste-back."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from smartpop.errors import SignInRequired
from smartpop.oauth import loopback, pkce
from smartpop.oauth.providers import google

STATE = "state-abc123"
CODE = "4/0AeaYSHB-example_code"
P = google("123-abc.apps.googleusercontent.com", "GOCSPX-s")


def test_the_sign_in_address_asks_for_offline_mail_access_with_pkce() -> None:
    req = loopback.start(P, "imap")
    parts = urlsplit(req.url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://accounts.google.com/o/oauth2/v2/auth"
    assert q == {"response_type": "code", "client_id": P.client_id, "redirect_uri": "http://127.0.0.1/",
                 "scope": "https://mail.google.com/", "code_challenge": pkce.challenge(req.verifier),
                 "code_challenge_method": "S256", "state": req.state, "access_type": "offline", "prompt": "consent"}
    assert "GOCSPX" not in req.url
    assert req.verifier not in repr(req) and req.verifier not in req.url


@pytest.mark.parametrize("pasted", [
    f"http://127.0.0.1/?state={STATE}&code=4%2F0AeaYSHB-example_code&scope=https://mail.google.com/",
    f"  http://localhost:8080/?code=4/0AeaYSHB-example_code&state={STATE}\n",
    f"127.0.0.1/?code=4/0AeaYSHB-example_code&state={STATE}",
    f"?code=4/0AeaYSHB-example_code&state={STATE}",
    f"code=4/0AeaYSHB-example_code&state={STATE}",
    CODE,
    "4%2F0AeaYSHB-example_code",
])
def test_the_code_is_found(pasted: str) -> None:
    assert loopback.parse_pasted(pasted, STATE) == CODE


@pytest.mark.parametrize(("pasted", "code", "words"), [
    (f"http://127.0.0.1/?code={CODE}&state=other", "state_mismatch", "another sign-in attempt"),
    (f"http://127.0.0.1/?code={CODE}", "state_mismatch", "another sign-in attempt"),
    (f"http://127.0.0.1/?error=access_denied&state={STATE}", "access_denied", "cancelled"),
    ("http://127.0.0.1/?error=invalid_scope&error_description=bad%0Ascope", "provider_error", "bad\\nscope"),
    (f"http://127.0.0.1/?state={STATE}", "bad_paste", "holds no code"),
    ("https://accounts.google.com/o/oauth2/v2/auth?client_id=x&state=y", "bad_paste", "sign-in address itself"),
    ("", "bad_paste", "nothing was pasted"),
    ("hello world", "bad_paste", "neither"),
    ("x" * 5000, "bad_paste", "too long"),
    (f"http://127.0.0.1/?code=a%0Ab&state={STATE}", "bad_paste", "malformed"),
])
def test_a_wrong_paste_says_why(pasted: str, code: str, words: str) -> None:
    with pytest.raises(SignInRequired) as err:
        loopback.parse_pasted(pasted, STATE)
    assert err.value.code == code and words in str(err.value)
    assert "\n" not in str(err.value)
