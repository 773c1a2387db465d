"""Token sets: absolute expiry, when to refresh, rotation, scope, and no token in any repr."""

from __future__ import annotations

import pytest

from smartpop.errors import ProtocolError
from smartpop.log import redact_known
from smartpop.oauth.tokens import DEFAULT_LIFETIME, MAX_LIFETIME, TokenSet, parse_token_response, stored

NOW = 1_800_000_000.0
ANSWER = {"token_type": "Bearer", "access_token": "at-secret-access-1", "expires_in": 3600,
          "refresh_token": "rt-secret-refresh-1", "scope": "https://outlook.office.com/IMAP.AccessAsUser.All"}


def test_expiry_is_absolute_from_when_the_request_went_out() -> None:
    t = parse_token_response(ANSWER, NOW)
    assert (t.access_token, t.refresh_token, t.expires_at) == ("at-secret-access-1", "rt-secret-refresh-1", NOW + 3600)
    assert t.scope == ("https://outlook.office.com/IMAP.AccessAsUser.All",)


def test_needs_refresh_honours_the_margin() -> None:
    t = parse_token_response(ANSWER, NOW)
    assert not t.needs_refresh(NOW + 3600 - 301)
    assert t.needs_refresh(NOW + 3600 - 300)
    assert t.needs_refresh(NOW + 3600 - 600, margin=600)
    assert t.needs_refresh(NOW + 4000)


def test_a_short_lived_token_is_refreshed_at_half_its_life_not_at_once() -> None:
    t = parse_token_response({**ANSWER, "expires_in": 60}, NOW)
    assert not t.needs_refresh(NOW + 29)
    assert t.needs_refresh(NOW + 30)


def test_a_refresh_answer_without_refresh_token_keeps_the_old_one() -> None:
    first = parse_token_response(ANSWER, NOW)
    kept = parse_token_response({"access_token": "at-secret-access-2", "expires_in": 3600}, NOW + 10, previous=first)
    assert kept.refresh_token == "rt-secret-refresh-1" and kept.scope == first.scope
    rotated = parse_token_response({**ANSWER, "access_token": "at-3", "refresh_token": "rt-secret-refresh-2"},
                                   NOW, previous=first)
    assert rotated.refresh_token == "rt-secret-refresh-2"


def test_scope_falls_back_to_the_requested_one() -> None:
    t = parse_token_response({"access_token": "at-x", "expires_in": 60}, NOW, requested_scope="a b")
    assert t.scope == ("a", "b") and t.has_scope("B a") and t.missing_scope("a c") == ("c",)


def test_lifetime_edge_cases() -> None:
    assert parse_token_response({"access_token": "at-x"}, NOW).expires_at == NOW + DEFAULT_LIFETIME
    assert parse_token_response({"access_token": "at-x", "expires_in": "120"}, NOW).expires_at == NOW + 120
    assert parse_token_response({"access_token": "at-x", "expires_in": 10**9}, NOW).expires_at == NOW + MAX_LIFETIME
    for bad in ("soon", 0, -5, float("nan"), [1]):
        with pytest.raises(ProtocolError):
            parse_token_response({"access_token": "at-x", "expires_in": bad}, NOW)


@pytest.mark.parametrize("answer", [{}, {"access_token": ""}, {"access_token": 5}, {"access_token": "a" * 20000},
                                    {"access_token": "at-x", "token_type": "mac"}])
def test_a_broken_answer_is_a_protocol_error(answer: dict) -> None:
    with pytest.raises(ProtocolError):
        parse_token_response(answer, NOW)


def test_no_repr_shows_a_token_and_the_logs_mask_them() -> None:
    t = parse_token_response(ANSWER, NOW)
    for text in (repr(t), str(t), f"{t}", repr([t])):
        assert "secret" not in text and "<redacted>" in text
    assert "at-secret-access-1" not in redact_known("token at-secret-access-1 and rt-secret-refresh-1")
    assert "rt-secret-refresh-1" not in redact_known("rt-secret-refresh-1")


def test_a_stored_refresh_token_is_due_at_once() -> None:
    t = stored("rt-from-the-config-store", "s1 s2")
    assert t.needs_refresh(0) and t.scope == ("s1", "s2") and not t.access_token
    assert "rt-from" not in repr(t)
    assert TokenSet("", 0.0, "").needs_refresh(NOW)
