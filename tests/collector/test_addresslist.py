"""Pure: the addresses a header value names (collector/addresslist.py)."""

from __future__ import annotations

from smartpop.collector.addresslist import extract_addresses, received_for


def test_address_extraction() -> None:
    assert extract_addresses("=?utf-8?B?YW5uYUBmaXJtYS5kZQ==?=") == ["anna@firma.de"]
    assert extract_addresses('"ben@firma.de" <anna@firma.de>') == ["anna@firma.de"]
    assert extract_addresses("team: a@x.de, b@y.de;, c@z.de") == ["a@x.de", "b@y.de", "c@z.de"]
    assert extract_addresses("anna@firma.de (Anna, the boss)") == ["anna@firma.de"]
    assert extract_addresses("undisclosed-recipients:;") == []
    assert received_for("by mx for anna@firma.de; date") == ["anna@firma.de"]
