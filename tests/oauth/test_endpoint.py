"""What a token endpoint's answers mean for the caller, with a fake session (no server)."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
import requests

from smartpop.errors import ConfigError, OAuthUnavailable, ProtocolError, SignInRequired
from smartpop.oauth import device
from smartpop.oauth.endpoint import post_form, raise_for_error
from smartpop.oauth.providers import microsoft


class Response:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.content = body if isinstance(body, bytes) else json.dumps(body).encode()


class Session:
    """Answers every POST with the next scripted response and records what was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: List[Dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> Response:
        self.sent.append({"url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_form_goes_out_without_redirects_and_with_a_timeout() -> None:
    s = Session(Response(200, {"ok": 1}))
    assert post_form(s, "https://x.test/token", {"a": "b"}).data == {"ok": 1}
    assert s.sent[0]["data"] == {"a": "b"} and s.sent[0]["allow_redirects"] is False and s.sent[0]["timeout"]


@pytest.mark.parametrize(("answer", "error"), [
    (requests.ConnectionError("to https://x.test/?secret"), OAuthUnavailable),
    (Response(502, b"<html>bad gateway</html>"), OAuthUnavailable),
    (Response(200, b"<html>captive portal</html>"), ProtocolError),
    (Response(200, [1, 2]), ProtocolError),
    (Response(200, b"{" * 70000), ProtocolError),
])
def test_transport_trouble(answer: Any, error: type) -> None:
    with pytest.raises(error) as err:
        post_form(Session(answer), "https://x.test/token", {})
    assert "secret" not in str(err.value)


@pytest.mark.parametrize(("status", "body", "error", "code"), [
    (400, {"error": "invalid_grant", "error_description": "AADSTS50173: grant expired"}, SignInRequired, "revoked"),
    (400, {"error": "access_denied"}, SignInRequired, "declined"),
    (400, {"error": "expired_token"}, SignInRequired, "expired"),
    (400, {"error": "invalid_scope"}, ConfigError, "oauth_app"),
    (401, {"error": "invalid_client"}, ConfigError, "oauth_app"),
    (400, {"error": "invalid_request", "error_description": "AADSTS90002: Tenant 'x' not found"}, ConfigError,
     "oauth_app"),
    (400, {"error": "temporarily_unavailable"}, OAuthUnavailable, None),
    (400, {"error": "something_new"}, ProtocolError, None),
    (403, {}, ProtocolError, None),
    (200, {"error": "invalid_grant"}, SignInRequired, "revoked"),
])
def test_error_answers(status: int, body: Dict[str, Any], error: type, code: Any) -> None:
    answer = post_form(Session(Response(status, body)), "https://x.test/token", {})
    with pytest.raises(error) as err:
        raise_for_error(answer)
    if code is not None:
        assert err.value.code == code  # type: ignore[attr-defined]
    if "error_description" in body:
        assert body["error_description"].split(":")[0] in str(err.value)


def test_a_hostile_description_is_one_bounded_line() -> None:
    answer = post_form(Session(Response(400, {"error": "invalid_client", "error_description": "a\nb" * 500})),
                       "https://x.test/token", {})
    with pytest.raises(ConfigError) as err:
        raise_for_error(answer)
    assert "\n" not in str(err.value) and len(str(err.value)) < 500


@pytest.mark.parametrize("body", [
    {"device_code": "d", "user_code": "U", "verification_uri": "javascript:alert(1)"},
    {"device_code": "d", "user_code": "U"},
    {"user_code": "U", "verification_uri": "https://microsoft.com/devicelogin"},
    {"device_code": "d", "user_code": "U" * 100, "verification_uri": "https://microsoft.com/devicelogin"},
])
def test_a_malformed_device_answer_is_a_protocol_error(body: Dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        device.start(microsoft("cid"), "imap", session=Session(Response(200, body)))


def test_device_answer_bounds_and_the_v1_field_name() -> None:
    body = {"device_code": "dc-secret-123", "user_code": "ABC", "verification_url": "https://microsoft.com/devicelogin",
            "expires_in": 999999, "interval": "0"}
    d = device.start(microsoft("cid"), "imap", session=Session(Response(200, body)), clock=lambda: 100.0)
    assert d.verification_uri == "https://microsoft.com/devicelogin"
    assert d.expires_at == 100.0 + 3600 and d.interval == 1 and d.message == ""
