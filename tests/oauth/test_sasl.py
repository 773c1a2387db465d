"""XOAUTH2 strings byte-exact, and a server's error challenge read safely."""

from __future__ import annotations

import base64
import json

import pytest

from smartpop.errors import ConfigError
from smartpop.oauth.sasl import FIELD_MAX, describe_failure, initial_response, parse_failure, pop3_auth_lines


def test_initial_response_byte_exact() -> None:
    # "user=a@b" ^A "auth=Bearer t" ^A ^A, base64 by hand in 3-byte groups:
    # use|r=a|@b^A|aut|h=B|ear|er |t^A^A -> dXNl cj1h QGIB YXV0 aD1C ZWFy ZXIg dAEB
    assert initial_response("a@b", "t") == "dXNlcj1hQGIBYXV0aD1CZWFyZXIgdAEB"


def test_initial_response_matches_the_published_example() -> None:
    token = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    assert initial_response("someuser@example.com", token) == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMj"
        "l0Q2cBAQ==")


@pytest.mark.parametrize(("user", "token"), [("a\x01b", "t"), ("a", "t\x01user=root"), ("", "t"), ("a", ""),
                                             ("a\r\nb", "t")])
def test_a_control_character_cannot_forge_a_field(user: str, token: str) -> None:
    with pytest.raises(ConfigError):
        initial_response(user, token)


def test_pop3_inlines_a_short_response_and_splits_a_long_one() -> None:
    assert pop3_auth_lines("abc") == ("AUTH XOAUTH2 abc", None)
    long = "A" * 1500  # a real Microsoft token is this long
    assert pop3_auth_lines(long) == ("AUTH XOAUTH2", long)
    edge = "B" * (255 - len("AUTH XOAUTH2 ") - 2)
    assert pop3_auth_lines(edge)[1] is None
    assert pop3_auth_lines(edge + "B")[1] is not None


def _challenge(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_the_error_challenge_names_status_and_scope() -> None:
    text = describe_failure(_challenge({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}))
    assert text == "status 401, scope https://mail.google.com/, schemes bearer"
    assert parse_failure(_challenge({"status": "400"}).encode()).status == "400"


@pytest.mark.parametrize("payload", ["not base64 !!", base64.b64encode(b"\xff\xfe").decode(), _challenge([1, 2]),
                                     _challenge("text"), ""])
def test_garbage_gives_a_generic_reason(payload: str) -> None:
    assert describe_failure(payload) == "the server refused the token without saying why"


def test_hostile_fields_are_escaped_and_bounded() -> None:
    text = describe_failure(_challenge({"status": "401\r\nFAKE LINE", "scope": "x" * 9000, "schemes": {"a": 1}}))
    assert "\n" not in text and "\r" not in text and "401\\r\\nFAKE LINE" in text
    assert len(text) < 3 * FIELD_MAX + 80
    assert describe_failure("A" * 100000)  # read only up to CHALLENGE_MAX, still an answer
