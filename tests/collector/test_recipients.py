"""Pure routing rules and header handling (no servers)."""

from __future__ import annotations

from smartpop.collector import headers
from smartpop.collector.recipients import RoutingPolicy, decide, extract_addresses, loop_marker, received_for
from smartpop.collector.runner import return_path
from smartpop.collector.spool import MEMORY_COPY, SpoolSlots, SpoolWriter

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


def test_address_extraction() -> None:
    assert extract_addresses("=?utf-8?B?YW5uYUBmaXJtYS5kZQ==?=") == ["anna@firma.de"]
    assert extract_addresses('"ben@firma.de" <anna@firma.de>') == ["anna@firma.de"]
    assert extract_addresses("team: a@x.de, b@y.de;, c@z.de") == ["a@x.de", "b@y.de", "c@z.de"]
    assert extract_addresses("anna@firma.de (Anna, the boss)") == ["anna@firma.de"]
    assert extract_addresses("undisclosed-recipients:;") == []
    assert received_for("by mx for anna@firma.de; date") == ["anna@firma.de"]


def test_rewrite_keeps_every_other_byte() -> None:
    raw = b"Delivered-To: a@firma.de\r\nSubject: x\r\ndelivered-to: b@firma.de\r\n\r\nDelivered-To: body@x\r\n"
    out = headers.rewrite_for_reinjection(raw)
    assert out == (b"X-Original-Delivered-To: a@firma.de\r\nSubject: x\r\nX-Original-Delivered-To: b@firma.de\r\n"
                   b"\r\nDelivered-To: body@x\r\n")


def test_return_path() -> None:
    def rp(text: str) -> str:
        return return_path(headers.parse_fields(text.encode()))

    assert rp("Return-Path: <a@b.de>\n\n") == "a@b.de"
    assert rp("Return-Path: <>\n\n") == ""
    assert rp("Return-Path: <not an address>\n\n") == ""
    assert rp("Subject: none\n\n") == ""


def test_spool_header_split_on_odd_chunking(tmp_path) -> None:
    data = b"Subject: a\r\n  folded\r\nX: y\r\n\r\nbody line\r\n"
    for size in (1, 2, 3, 7, 100):
        writer = SpoolWriter(tmp_path, "t")
        for i in range(0, len(data), size):
            writer.write(data[i:i + size])
        spooled = writer.close()
        assert spooled.header == b"Subject: a\r\n  folded\r\nX: y\r\n\r\n"
        assert spooled.path.read_bytes() == data
        assert [f.name for f in spooled.fields] == ["subject", "x"]
        spooled.remove()


def test_spool_in_memory_keeps_small_messages_off_the_disk_and_spills_large_ones(tmp_path) -> None:
    head = b"Subject: a\r\nX: y\r\n\r\n"
    for body_size in (0, 10, MEMORY_COPY - len(head), MEMORY_COPY - len(head) + 1, 3 * MEMORY_COPY):
        data = head + b"b" * body_size
        for size in (1000, 64 * 1024):
            slots = SpoolSlots(tmp_path, "t")
            writer = SpoolWriter(tmp_path, "t", slots, in_memory=True)
            for i in range(0, len(data), size):
                writer.write(data[i:i + size])
            spooled = writer.close()
            assert spooled.header == head and spooled.size == len(data)
            assert b"".join(spooled.body_chunks()) == data[len(head):]
            if len(data) <= MEMORY_COPY:
                assert spooled.path is None and not list(tmp_path.iterdir())
            else:
                assert spooled.path is not None and spooled.path.read_bytes() == data
            spooled.remove()
            slots.remove_all()
            assert not list(tmp_path.iterdir())


def test_own_address_from_a_login_without_domain() -> None:
    from smartpop.collector.runner import policy_for
    from smartpop.config.schema import parse_config

    doc = {"accounts": [{"name": "a", "host": "pop.example.de", "username": "sammel", "password": "x" * 8}],
           "local_domains": ["firma.de"], "fallback_recipient": "postmaster@firma.de"}
    config = parse_config(doc)
    policy = policy_for(config, config.accounts[0])
    assert policy.own_addresses == ("sammel@firma.de",)
    decision = route("Delivered-To: sammel@firma.de\nX-Original-To: ben@firma.de\n\n", policy)
    assert decision.recipients == ["ben@firma.de"]
