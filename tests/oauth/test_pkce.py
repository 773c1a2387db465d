"""PKCE S256 against RFC 7636's example, and fresh values every time."""

from __future__ import annotations

import re

import pytest

from smartpop.oauth import pkce


def test_challenge_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifiers_and_states_are_fresh_and_well_formed() -> None:
    verifiers = {pkce.new_verifier() for _ in range(20)}
    assert len(verifiers) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", v) for v in verifiers)
    assert pkce.new_state() != pkce.new_state() and len(pkce.new_state()) >= 32


@pytest.mark.parametrize("bad", ["short", "x" * 129, "a" * 42 + "!", "a" * 42 + "="])
def test_a_malformed_verifier_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        pkce.challenge(bad)
