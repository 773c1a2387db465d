"""Pure routing rules (no servers)."""

from __future__ import annotations

from smartpop.collector import headers
from smartpop.collector.recipients import RoutingPolicy, decide, loop_marker

POLICY = RoutingPolicy(mode="multidrop", local_domains=("firma.de",), aliases={"info@firma.de": ["anna@firma.de"]},
                       fallback="postmaster@firma.de", own_addresses=("sammel@firma.de",), loop_key=b"k" * 32)


def route(raw: str, policy: RoutingPolicy = POLICY):
    return decide(headers.parse_fields(raw.encode()), policy)


def test_envelope_order_and_skipping() -> None:
    d = route("Delivered-To: sammel@firma.de\nX-Original-To: Ben@Firma.DE\nTo: anna@firma.de\n\n")
    assert d.recipients == ["ben@firma.de"] and d.rule == "X-Original-To"
    d = route("Delivered-To: x@other.org\nEnvelope-To: anna@firma.de, ben@firma.de\n\n")
    assert d.recipients == ["anna@firma.de", "ben@firma.de"] and d.rule == "Envelope-To"
    d = route("X-Envelope-To: <ben@firma.de>\nX-RCPT-TO: anna@firma.de\n\n")
    assert d.recipients == ["ben@firma.de"]
    d = route("Received: from a by b with ESMTP id 1\n for <anna@firma.de>; Sat, 1 Jan 2026\nTo: ben@firma.de\n\n")
    assert d.recipients == ["anna@firma.de"] and d.rule == "Received"


def test_to_cc_only_without_envelope_and_fallback() -> None:
    assert route("To: a@other.org\nCc: \"B, x\" <ben@firma.de>\n\n").recipients == ["ben@firma.de"]
    assert route("Resent-To: ben@firma.de\nTo: anna@firma.de\n\n").recipients == ["ben@firma.de"]
    d = route("To: undisclosed-recipients:;\n\n")
    assert d.recipients == ["postmaster@firma.de"] and d.rule == "fallback"
    d = route("Delivered-To: sammel@firma.de\nTo: anna@firma.de\n\n")
    assert d.recipients == ["anna@firma.de"] and d.rule == "To/Cc"


def test_aliases_loop_and_single() -> None:
    assert route("Delivered-To: info@firma.de\n\n").recipients == ["anna@firma.de"]
    marker = loop_marker(b"k" * 32, "<m@x>")
    d = route(f"X-SmartPop-Loop: {marker}\nMessage-ID: <m@x>\nDelivered-To: anna@firma.de\n\n")
    assert d.loop and d.recipients == ["postmaster@firma.de"]
    assert not route("X-SmartPop-Loop: other.example\nDelivered-To: anna@firma.de\n\n").loop
    # Issue 11: the old marker (the domain) can be written by anyone; it no longer counts.
    d = route("X-SmartPop-Loop: firma.de\nDelivered-To: anna@firma.de\n\n")
    assert not d.loop and d.recipients == ["anna@firma.de"]
    single = RoutingPolicy(mode="single", local_domains=(), deliver_to="anna@firma.de")
    assert route("Delivered-To: ben@firma.de\n\n", single).recipients == ["anna@firma.de"]

