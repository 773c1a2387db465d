"""Each account's routing facts from the configuration (no servers)."""

from __future__ import annotations

from smartpop.collector import headers
from smartpop.collector.policy import policy_for
from smartpop.collector.recipients import RoutingPolicy, decide
from smartpop.config.schema import parse_config


def route(raw: str, policy: RoutingPolicy):
    return decide(headers.parse_fields(raw.encode()), policy)


def test_own_address_from_a_login_without_domain() -> None:
    doc = {"accounts": [{"name": "a", "host": "pop.example.de", "username": "sammel", "password": "x" * 8}],
           "local_domains": ["firma.de"], "fallback_recipient": "postmaster@firma.de"}
    config = parse_config(doc)
    policy = policy_for(config, config.accounts[0])
    assert policy.own_addresses == ("sammel@firma.de",)
    decision = route("Delivered-To: sammel@firma.de\nX-Original-To: ben@firma.de\n\n", policy)
    assert decision.recipients == ["ben@firma.de"]
