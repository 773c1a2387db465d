"""Issue 11.2 / 12, pure: plain recipients only, only the provider's envelope headers, an unforgeable loop marker.

No servers: routing decisions from header text. test_no_outbound.py runs the same cases
through the real collector into a Postfix that would relay them.
"""

from __future__ import annotations

import os
import stat
from typing import List

import pytest

from smartpop.collector import headers, loopkey
from smartpop.collector.addresslist import candidates
from smartpop.collector.delivery import screen
from smartpop.collector.policy import delivery_domains, policy_for
from smartpop.collector.recipients import RoutingPolicy, decide, loop_marker, provider_block
from smartpop.collector.trace import return_path
from smartpop.config.schema import parse_config
from smartpop.paths import Paths

KEY = bytes(range(32))
POLICY = RoutingPolicy(mode="multidrop", local_domains=("firma.de",),
                       aliases={"info@firma.de": ["anna@firma.de", "ben@firma.de"]},
                       fallback="postmaster@firma.de", own_addresses=("sammel@firma.de",), loop_key=KEY)
FALLBACK = ["postmaster@firma.de"]

# Provider shapes: what the provider's MTA writes on top when it files a message into the catch-all.
POSTFIX_TOP = ("Return-Path: <sender@remote.example>\nX-Original-To: {rcpt}\nDelivered-To: sammel@firma.de\n"
               "Received: from mx.provider.example (localhost [127.0.0.1])\n\tby store.provider.example (Postfix) "
               "with ESMTP id A1\n\tfor <sammel@firma.de>; Sat, 28 Nov 2026 06:00:01 +0000\n"
               "Received: from mail.remote.example (mail.remote.example [192.0.2.1])\n\tby mx.provider.example "
               "(Postfix) with ESMTPS id B2\n\tfor <{rcpt}>; Sat, 28 Nov 2026 06:00:00 +0000\n")
SENDER = ("DKIM-Signature: v=1; a=rsa-sha256; d=remote.example; s=x; b=abc\nFrom: Sender <sender@remote.example>\n"
          "To: {to}\nSubject: hello\nMessage-ID: <m1@remote.example>\n\n")


def route(raw: str, policy: RoutingPolicy = POLICY):
    return decide(headers.parse_fields(raw.encode("utf-8")), policy)


HOSTILE = [
    ("victim%evil.example@firma.de", "percent hack"),
    ("evil.example!victim@firma.de", "bang path"),
    ('"victim@evil.example"@firma.de', "quoted local part"),
    ('"victim%evil.example"@firma.de', "quoted local part"),
    ("<@evil.example:anna@firma.de>", "source route"),
    ("<victim@evil.example@firma.de>", "'@' in the local part"),
    ("|/usr/bin/id@firma.de", "'|' in the local part"),
    ("/etc/passwd@firma.de", "'/' in the local part"),
    ("-oQ/tmp@firma.de", "'/' in the local part"),
    ("-bad@firma.de", "starts with '.' or '-'"),
    (".anna@firma.de", "starts with '.' or '-'"),
    ("an..na@firma.de", "'..'"),
    ("anna#x@firma.de", "character '#'"),
    ("rüben@firma.de", "non-ASCII local part"),
]


@pytest.mark.parametrize(("address", "why"), HOSTILE)
@pytest.mark.parametrize("header", ["Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-RCPT-TO",
                                    "To"])
def test_a_local_part_an_mta_could_rewrite_goes_to_the_fallback(header: str, address: str, why: str) -> None:
    d = route(f"{header}: {address}\n\n")
    assert d.recipients == FALLBACK and d.rule == "fallback"
    assert why in d.detail and len(d.refused) == 1 and why in d.refused[0][1]


@pytest.mark.parametrize(("address", "why"), [(a, w) for a, w in HOSTILE if not a.startswith("<@")])
def test_received_for_with_such_a_local_part_goes_to_the_fallback(address: str, why: str) -> None:
    bare = address.strip("<>")
    d = route(f"Received: from a by mx.provider.example with ESMTP id 1\n\tfor <{bare}>; Sat, 28 Nov 2026\n"
              "To: anna@firma.de\n\n")
    assert d.recipients == FALLBACK and why in d.detail


def test_issue_12_a_local_part_is_taken_whole_or_not_at_all() -> None:
    for raw, lost in (("rüben@firma.de", "ben@firma.de"), ("zoëanna@firma.de", "anna@firma.de"),
                      ("müllerchef@firma.de", "llerchef@firma.de")):
        for header in ("Delivered-To", "X-Original-To", "To"):
            d = route(f"{header}: {raw}\n\n")
            assert lost not in d.recipients and d.recipients == FALLBACK, (header, raw, d)
            assert "non-ASCII local part" in d.detail
    # Plain and non-ASCII side by side: the plain one is delivered, the other copy goes to the fallback.
    d = route("Delivered-To: ben@firma.de\nDelivered-To: zoëanna@firma.de\n\n")
    assert d.recipients == ["ben@firma.de", "postmaster@firma.de"] and d.rule == "Delivered-To"
    assert d.refused == (("zoëanna@firma.de", "non-ASCII local part (MailPlus does not offer SMTPUTF8)"),)
    # RFC 2047 cannot smuggle one in either.
    assert route("To: =?utf-8?q?r=C3=BCben?=@firma.de\n\n").recipients == FALLBACK
    assert candidates("GMX delivery to anna@gmx.example") == ["anna@gmx.example"]


def test_non_local_hostile_addresses_are_skipped_not_sent() -> None:
    d = route("Delivered-To: victim%x@evil.example\nX-Original-To: <@firma.de:victim@evil.example>\n"
              "To: anna@firma.de\n\n")
    assert d.recipients == ["anna@firma.de"] and d.rule == "To/Cc"


def test_return_path_that_mta_could_rewrite_becomes_the_null_sender() -> None:
    def rp(text: str) -> str:
        return return_path(headers.parse_fields(text.encode()))

    assert rp("Return-Path: <victim%evil.example@firma.de>\n\n") == ""
    assert rp("Return-Path: <evil.example!victim@firma.de>\n\n") == ""
    assert rp("Return-Path: <@a.example:victim@evil.example>\n\n") == ""
    assert rp("Return-Path: <bounce+x=y@remote.example>\n\n") == "bounce+x=y@remote.example"


def test_delivery_screen_refuses_what_routing_must_never_produce() -> None:
    sender, send, refused = screen("victim%evil.example@firma.de",
                                   ["anna@firma.de", "victim%evil.example@firma.de", "x@outside.example",
                                    "rüben@firma.de", "@firma.de:victim@evil.example"], ("firma.de",))
    assert sender == "" and send == ["anna@firma.de"]
    assert sorted(refused) == sorted(["victim%evil.example@firma.de", "x@outside.example", "rüben@firma.de",
                                      "@firma.de:victim@evil.example"])
    assert all(why.startswith("550 5.1.3 not sent by SmartPop: ") for why in refused.values())
    assert screen("a@remote.example", ["anna@firma.de"], None) == ("a@remote.example", ["anna@firma.de"], {})


# --- which envelope headers count -------------------------------------------------------------

def test_envelope_headers_below_the_providers_first_received_are_ignored() -> None:
    top = ("Return-Path: <s@remote.example>\nDelivered-To: sammel@firma.de\n"
           "Received: from mail.evil.example by mx.provider.example with ESMTPS id 1\n\tfor <sammel@firma.de>; "
           "Sat, 28 Nov 2026\n")
    # The issue's reproduction: the sender wrote the Delivered-To below the provider's.
    d = route(top + "Delivered-To: victim%evil.example@firma.de\nTo: undisclosed-recipients:;\n\n")
    assert d.recipients == FALLBACK and "victim" not in " ".join(d.recipients)
    assert "ignored 1 envelope header(s) (Delivered-To) below the provider's first Received" in d.detail
    # A plain address deep down does not redirect mail either: the To/Cc rule (sender-written anyway) decides.
    d = route(top + "X-Original-To: ceo@firma.de\nDelivered-To: ceo@firma.de\nTo: anna@firma.de\n\n")
    assert d.recipients == ["anna@firma.de"] and d.rule == "To/Cc"
    # A forged Received with a for clause below the provider's does not count.
    d = route(top + "Received: from x by y with SMTP id 2\n\tfor <ceo@firma.de>; Sat, 28 Nov 2026\n"
              "To: undisclosed-recipients:;\n\n")
    assert d.recipients == FALLBACK


@pytest.mark.parametrize(("rcpt", "to"), [("anna@firma.de", "anna@firma.de"), ("ben@firma.de", "team@firma.de"),
                                          ("ben@firma.de", "undisclosed-recipients:;")])
def test_postfix_provider_catchall_shapes(rcpt: str, to: str) -> None:
    raw = POSTFIX_TOP.format(rcpt=rcpt) + "Delivered-To: ceo@firma.de\n" + SENDER.format(to=to)
    d = route(raw)
    assert d.recipients == [rcpt] and d.rule == "X-Original-To"
    assert "ignored 1 envelope header(s)" in d.detail


def test_other_provider_shapes() -> None:
    exim = ("Return-path: <s@remote.example>\nEnvelope-to: anna@firma.de, ben@firma.de\n"
            "Delivery-date: Sat, 28 Nov 2026 06:00:01 +0000\nReceived: from mail.remote.example ([192.0.2.1])\n"
            "\tby mx.provider.example with esmtps (Exim 4.96) id 1abc; Sat, 28 Nov 2026\n")
    assert route(exim + SENDER.format(to="team@firma.de")).recipients == ["anna@firma.de", "ben@firma.de"]
    gmail = ("Delivered-To: ben@firma.de\nReceived: by 2002:a05:6a10:1:b0:1 with SMTP id x; Sat, 28 Nov 2026\n"
             "X-Received: by 2002:a17:1 with SMTP id y; Sat, 28 Nov 2026\nARC-Seal: i=1; a=rsa-sha256; cv=none\n"
             "Return-Path: <s@remote.example>\nReceived: from mail.remote.example by mx.google.example with ESMTPS "
             "id z\n\tfor <ben@firma.de>; Sat, 28 Nov 2026\n")
    assert route(gmail + SENDER.format(to="anna@firma.de")).recipients == ["ben@firma.de"]
    dovecot_lmtp = ("Return-Path: <s@remote.example>\nDelivered-To: anna@firma.de\nReceived: from mx.provider.example"
                    "\n\tby store.provider.example with LMTP id q\n\tfor <anna@firma.de>; Sat, 28 Nov 2026\n")
    assert route(dovecot_lmtp + SENDER.format(to="ben@firma.de")).recipients == ["anna@firma.de"]
    # Several recipients in one copy, and an alias among them.
    several = "X-Original-To: anna@firma.de\nX-Original-To: info@firma.de\nReceived: from a by b; Sat\n"
    assert route(several + SENDER.format(to="x@remote.example")).recipients == ["anna@firma.de", "ben@firma.de"]
    # BCC known only from the provider's Received for clause (topmost Received).
    bcc = ("Delivered-To: sammel@firma.de\nReceived: from mail.remote.example by mx.provider.example with ESMTPS "
           "id 1\n\tfor <ben@firma.de>; Sat, 28 Nov 2026\n"
           "Received: from pc by mail.remote.example with ESMTPSA id 2\n\tfor <anna@firma.de>; Sat, 28 Nov 2026\n")
    d = route(bcc + SENDER.format(to="anna@firma.de"))
    assert d.recipients == ["ben@firma.de"] and d.rule == "Received"


def test_provider_block() -> None:
    fields = headers.parse_fields(b"A: 1\nDelivered-To: x@y.de\nReceived: r1\nDelivered-To: z@y.de\nReceived: r2\n\n")
    assert [f.value for f in provider_block(fields)] == ["1", "x@y.de", "r1"]
    fields = headers.parse_fields(b"A: 1\nDelivered-To: x@y.de\n\n")
    assert len(provider_block(fields)) == 2


# --- aliases and config addresses -------------------------------------------------------------

def test_alias_targets_must_be_plain_local_mailboxes() -> None:
    policy = RoutingPolicy(mode="multidrop", local_domains=("firma.de",), fallback="postmaster@firma.de",
                           aliases={"info@firma.de": ["anna@firma.de", "chef@outside.example"],
                                    "x@firma.de": ["victim%evil.example@firma.de"]}, loop_key=KEY)
    d = route("Delivered-To: info@firma.de\n\n", policy)
    assert d.recipients == ["anna@firma.de", "postmaster@firma.de"]
    assert "alias target: domain outside.example is not a local domain" in d.detail
    d = route("Delivered-To: x@firma.de\n\n", policy)
    assert d.recipients == FALLBACK and "percent hack" in d.detail


def test_delivery_domains_are_local_domains_and_single_drop_targets() -> None:
    doc = {"accounts": [{"name": "a", "host": "pop.example.de", "username": "s@firma.de", "password": "x" * 8},
                        {"name": "b", "host": "pop.example.de", "username": "t@x.de", "password": "x" * 8,
                         "mode": "single", "deliver_to": "anna@zweit.de"}],
           "local_domains": ["Firma.de"], "fallback_recipient": "postmaster@firma.de"}
    assert delivery_domains(parse_config(doc)) == ("firma.de", "zweit.de")


# --- the loop marker --------------------------------------------------------------------------

def _with_marker(marker: str, msgid: str = "<m1@remote.example>") -> str:
    return f"X-SmartPop-Loop: {marker}\nDelivered-To: anna@firma.de\nMessage-ID: {msgid}\n\n"


def test_only_this_installations_marker_counts() -> None:
    genuine = loop_marker(KEY, "<m1@remote.example>")
    assert genuine.startswith("v2 ") and KEY.hex() not in genuine
    d = route(_with_marker(genuine))
    assert d.loop and d.recipients == FALLBACK
    forged: List[str] = ["firma.de", "v2", "v2 " + "0" * 32, loop_marker(b"another installation" * 2,
                                                                         "<m1@remote.example>")]
    for marker in forged:
        d = route(_with_marker(marker))
        assert not d.loop and d.recipients == ["anna@firma.de"], marker
        assert "ignored 1 X-SmartPop-Loop that this installation did not write" in d.detail
    # A genuine marker copied onto another message does not verify there.
    assert not route(_with_marker(genuine, "<other@evil.example>")).loop
    # Folding or extra space in the Message-ID does not break it; a marker among forged ones still counts.
    assert route(f"X-SmartPop-Loop: firma.de\nX-SmartPop-Loop: {genuine}\nMessage-ID:\n <m1@remote.example>\n\n").loop
    # Without a key nothing verifies.
    nokey = RoutingPolicy(mode="multidrop", local_domains=("firma.de",), fallback="postmaster@firma.de")
    assert not route(_with_marker(genuine), nokey).loop
    assert KEY.hex() not in repr(POLICY) and repr(KEY) not in repr(POLICY)


def test_loop_key_is_made_once_private_and_shared(tmp_path) -> None:
    paths = Paths(tmp_path / "data")
    paths.data.mkdir()
    key = loopkey.load_or_create(paths)
    assert len(key) == 32 and loopkey.load_or_create(paths) == key
    secret = paths.data / loopkey.FILE_NAME
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert secret.read_text().strip() == key.hex()
    config = parse_config({"accounts": [{"name": "a", "host": "pop.example.de", "username": "s@firma.de",
                                         "password": "x" * 8}], "local_domains": ["firma.de"],
                           "fallback_recipient": "postmaster@firma.de"})
    assert policy_for(config, config.accounts[0], key).loop_key == key
    secret.write_text("short\n")
    assert loopkey.load_or_create(paths) != key
