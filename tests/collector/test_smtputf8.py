"""Issue 12 §3: a non-ASCII local part goes to that exact mailbox where MailPlus offers SMTPUTF8, else to the fallback.

Never to another user ("rüben@" was once "ben@"), never shortened. Pure routing first, then
the wire (what SmartPop sends, byte for byte, to a server with and without SMTPUTF8, pipelined
and lock-step), then the real collector into Postfix (MailPlus stand-in that also relays
outside mail to a recording sink) and into a server that does not offer SMTPUTF8.
"""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from typing import Iterator, List

import pytest

from smartpop.collector import delivery, headers, service
from smartpop.collector.mailboxcheck import safe_reason
from smartpop.collector.recipients import RoutingPolicy, decide
from support.collect import Env, body_of
from support.outbound_postfix import OutboundPostfix, Sink
from support.wire_smtp import WireSmtp

KEY = bytes(range(32))
POLICY = RoutingPolicy(mode="multidrop", local_domains=("firma.de",), fallback="postmaster@firma.de",
                       own_addresses=("sammel@firma.de",), loop_key=KEY)


def _with_smtputf8(policy: RoutingPolicy) -> RoutingPolicy:
    # Code from before SMTPUTF8 has no such field: then the tests fail on their assertions, not on import.
    names = {f.name for f in dataclasses.fields(policy)}
    return dataclasses.replace(policy, **{"smtputf8": True}) if "smtputf8" in names else policy


UTF8 = _with_smtputf8(POLICY)
FALLBACK = ["postmaster@firma.de"]
RUEBEN = "r\u00fcben@firma.de"  # NFC
NOT_OFFERED = "MailPlus does not offer SMTPUTF8"

# Refused even where MailPlus offers SMTPUTF8: (address, part of the reason).
HOSTILE_UTF8 = [
    ("r\u00fc\u200bben@firma.de", "U+200B"),  # zero-width space: looks like rüben
    ("r\u00fc\u202eneb@firma.de", "U+202E"),  # right-to-left override
    ("r\u00fc\u00a0ben@firma.de", "compatibility character"),  # no-break space
    ("\u0430nna@firma.de", "mixed scripts"),  # Cyrillic U+0430 + Latin: looks like anna
    ("\u0440\u00fcben@firma.de", "mixed scripts"),  # Cyrillic U+0440, looks like p
    ("\uff52\u00fcben@firma.de", "compatibility character"),  # fullwidth r
    ("\U0001d42b\u00fcben@firma.de", "compatibility character"),  # mathematical bold r
    ("\u0308ben@firma.de", "combining mark not after a letter"),
    ("r\u00fcben%evil.example@firma.de", "percent hack"),
    ("evil.example!r\u00fcben@firma.de", "bang path"),
    ("<r\u00fcben:x@firma.de>", "source route"),
    ("r\u00fcben/x@firma.de", "'/'"),
    ("r\u00fcben|x@firma.de", "'|'"),
    ("\u0663r\u00fcben@firma.de", "U+0663"),  # Arabic-Indic digit
    ("\u02bcr\u00fcben@firma.de", "U+02BC"),  # modifier letter apostrophe
    (".r\u00fcben@firma.de", "starts with '.'"),
    ("r\u00fc..ben@firma.de", "'..'"),
    ("\u00fc" * 33 + "@firma.de", "longer than 64"),
    ("\u212anna@firma.de", "stands for an ASCII one"),  # Kelvin sign: NFC makes it "Knna"
]


def route(raw: str, policy: RoutingPolicy = UTF8):
    return decide(headers.parse_fields(raw.encode("utf-8")), policy)


# --- routing ---------------------------------------------------------------------------------

def test_with_smtputf8_a_non_ascii_local_part_is_the_recipient_whole() -> None:
    for raw in (RUEBEN, "zo\u00ebanna@firma.de", "m\u00fcllerchef@firma.de", "\u0438\u0432\u0430\u043d@firma.de",
                "\u5c71\u7530\u592a\u90ce@firma.de", "\u3084\u307e\u3060\u592a\u90ce@firma.de"):
        for header in ("Delivered-To", "X-Original-To", "To"):
            d = route(f"{header}: {raw}\n\n")
            assert d.recipients == [raw] and not d.refused, (header, raw, d)
    # Decomposed ("u" + U+0308) and upper case name the same mailbox: sent in NFC, lower case.
    d = route("Delivered-To: Ru\u0308ben@Firma.DE\n\n")
    assert d.recipients == [RUEBEN] and unicodedata.normalize("NFC", RUEBEN) == RUEBEN
    d = route(f"Delivered-To: ben@firma.de\nDelivered-To: zo\u00ebanna@firma.de\nDelivered-To: {RUEBEN}\n\n")
    assert d.recipients == ["ben@firma.de", "zo\u00ebanna@firma.de", RUEBEN] and d.refused == ()
    # Without SMTPUTF8 the copy goes to the fallback, and the decision says why.
    d = route(f"Delivered-To: ben@firma.de\nDelivered-To: {RUEBEN}\n\n", POLICY)
    assert d.recipients == ["ben@firma.de", "postmaster@firma.de"]
    assert d.refused == ((RUEBEN, f"non-ASCII local part ({NOT_OFFERED})"),)


@pytest.mark.parametrize(("address", "why"), HOSTILE_UTF8)
def test_with_smtputf8_a_doubtful_non_ascii_local_part_still_goes_to_the_fallback(address: str, why: str) -> None:
    for header in ("Delivered-To", "To"):
        d = route(f"{header}: {address}\n\n")
        assert d.recipients == FALLBACK and len(d.refused) == 1 and why in d.refused[0][1], (header, d)
    # The one rule: the guard before RCPT refuses what routing refuses (the Kelvin sign: as not NFC).
    bare = address.strip("<>")
    assert safe_reason(bare, ("firma.de",), smtputf8=True) is not None
    _, send, refused = delivery.screen("", [bare, "anna@firma.de"], ("firma.de",), smtputf8=True)
    assert send == ["anna@firma.de"] and refused[bare].startswith("550 5.1.3 not sent by SmartPop: ")


@pytest.mark.parametrize("policy", [POLICY, UTF8], ids=["without", "with"])
def test_unicode_space_inside_a_local_part_does_not_split_it(policy: RoutingPolicy) -> None:
    # str.split() splits at these too: "rü<NBSP>ben@" became "ben@", another user.
    for space in ("\u00a0", "\u2028", "\u3000", "\u2003", "\x1f", "\x85"):
        for written, other in ((f"r\u00fc{space}ben@firma.de", "ben@firma.de"),
                               (f"zo\u00eb{space}anna@firma.de", "anna@firma.de")):
            for header in ("Delivered-To", "X-Original-To", "To"):
                d = route(f"{header}: {written}\n\n", policy)
                assert other not in d.recipients and d.recipients == FALLBACK, (header, written, d)
            d = route(f"Received: from a by mx.provider.example with ESMTP id 1\n\tfor <{written}>; Sat, 28 Nov 2026"
                      "\nTo: x@remote.example\n\n", policy)
            assert other not in d.recipients and d.recipients == FALLBACK, (written, d)


def test_the_domain_stays_ascii_and_local() -> None:
    assert route("Delivered-To: r\u00fcben@firm\u00e4.de\nTo: anna@firma.de\n\n").recipients == ["anna@firma.de"]
    assert safe_reason("r\u00fcben@other.example", ("firma.de",), smtputf8=True) == \
        "domain other.example is not a local domain"
    assert delivery.screen("", [RUEBEN], ("firma.de",), smtputf8=True)[1] == [RUEBEN]
    # Not NFC is never sent: routing always hands over NFC.
    assert "NFC" in (safe_reason("ru\u0308ben@firma.de", ("firma.de",), smtputf8=True) or "")


# --- the wire --------------------------------------------------------------------------------

@pytest.fixture(params=["pipelining", "lock-step"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "pipelining")


def _servers(smtputf8: bool, pipelining: bool) -> WireSmtp:
    return WireSmtp(["anna@firma.de", "ben@firma.de", "postmaster@firma.de", RUEBEN], smtputf8,
                    pipelining).start()


RAW = b"From: a@remote.example\nSubject: x\nMessage-ID: <w@remote.example>\n\nbody\n.dot\n"
CRLF = RAW.replace(b"\n", b"\r\n")


def test_smtputf8_only_for_the_transaction_that_needs_it(pipelining: bool) -> None:
    server = _servers(True, pipelining)
    session = delivery.SmtpSession("127.0.0.1", server.port, timeout=10, domains=("firma.de",))
    try:
        ascii_only = session.deliver("s@remote.example", ["anna@firma.de"], lambda: [RAW])
        mixed = session.deliver("s@remote.example", ["ben@firma.de", RUEBEN], lambda: [RAW])
        again = session.deliver("s@remote.example", ["anna@firma.de"], lambda: [RAW])
        assert session._smtp is not None and session._smtp.command_encoding == "ascii"
    finally:
        session.close()
        server.stop()
    assert ascii_only.accepted == ["anna@firma.de"] and again.accepted == ["anna@firma.de"]
    assert mixed.accepted == ["ben@firma.de", RUEBEN] and not mixed.rejected
    plain = [b"MAIL FROM:<s@remote.example>", b"RCPT TO:<anna@firma.de>", b"DATA"]
    assert server.commands() == [*plain,
                                 b"MAIL FROM:<s@remote.example> SMTPUTF8", b"RCPT TO:<ben@firma.de>",
                                 b"RCPT TO:<r\xc3\xbcben@firma.de>", b"DATA",
                                 *plain]
    stored = server.stored()
    assert [s.rcpts for s in stored] == [["anna@firma.de"], ["ben@firma.de", RUEBEN], ["anna@firma.de"]]
    assert all(s.data == CRLF for s in stored)


def test_without_smtputf8_the_exact_address_is_not_sent_and_says_why(pipelining: bool,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = _servers(False, pipelining)
    session = delivery.SmtpSession("127.0.0.1", server.port, timeout=10, domains=("firma.de",))
    try:
        with caplog.at_level(logging.INFO, logger="smartpop.collector"):
            result = session.deliver("s@remote.example", ["ben@firma.de", RUEBEN], lambda: [RAW])
            alone = session.deliver("s@remote.example", [RUEBEN], lambda: [RAW])
    finally:
        session.close()
        server.stop()
    assert result.accepted == ["ben@firma.de"] and list(result.rejected) == [RUEBEN]
    assert result.rejected[RUEBEN].startswith("550 ") and NOT_OFFERED in result.rejected[RUEBEN]
    assert alone.accepted == [] and NOT_OFFERED in alone.rejected[RUEBEN]
    # Nothing non-ASCII and no SMTPUTF8 on the wire; the ASCII copy exactly as before.
    assert server.commands() == [b"MAIL FROM:<s@remote.example>", b"RCPT TO:<ben@firma.de>", b"DATA"]
    assert [(s.rcpts, s.data) for s in server.stored()] == [(["ben@firma.de"], CRLF)]
    assert NOT_OFFERED in caplog.text


def test_a_long_list_asks_with_smtputf8_and_a_refused_one_is_rejected(pipelining: bool) -> None:
    server = _servers(True, pipelining)
    others = [f"u{i}@firma.de" for i in range(delivery.REFUSALS_MAX + 2)]  # unknown: refused, cut at the limit
    session = delivery.SmtpSession("127.0.0.1", server.port, timeout=10, domains=("firma.de",))
    try:
        result = session.deliver("", [RUEBEN, "zo\u00eb@firma.de", "anna@firma.de", *others], lambda: [RAW])
    finally:
        session.close()
        server.stop()
    assert sorted(result.accepted) == sorted([RUEBEN, "anna@firma.de"])
    assert "zo\u00eb@firma.de" in result.rejected and result.rejected["zo\u00eb@firma.de"].startswith("550 5.1.1")
    mails = [c for c in server.commands() if c.startswith(b"MAIL")]
    assert mails and all(m == b"MAIL FROM:<> SMTPUTF8" for m in mails)
    assert [s.rcpts for s in server.stored()] == [[RUEBEN, "anna@firma.de"]]
    assert b"RCPT TO:<ben@firma.de>" not in server.commands()


# --- the real collector ----------------------------------------------------------------------

DOMAIN = "firma.de"
ANNA, BEN, POSTMASTER = f"anna@{DOMAIN}", f"ben@{DOMAIN}", f"postmaster@{DOMAIN}"
ZOE = f"zo\u00ebanna@{DOMAIN}"


def _cases() -> List[bytes]:
    def msg(n: int, top: str, to: str = "undisclosed-recipients:;") -> bytes:
        return (f"{top}From: Sender <s@remote.example>\nTo: {to}\nSubject: utf8 {n}\n"
                f"Message-ID: <utf8.{n}@remote.example>\n\nbody {n} f\u00fcr dich\n.leading dot\n").encode()
    return [
        msg(1, f"Delivered-To: {RUEBEN}\n"),
        msg(2, f"Delivered-To: {BEN}\nDelivered-To: {ZOE}\n"),
        msg(3, "X-Original-To: Ru\u0308ben@firma.de\n"),  # decomposed and upper case: the same mailbox
        msg(4, "", to=f"Anna <{ANNA}>, m\u00fcllerchef@firma.de"),  # unknown to MailPlus: 550 -> fallback
        msg(5, "Delivered-To: \u0430nna@firma.de\n"),  # mixed script: never anna
        msg(6, f"Delivered-To: {ANNA}\n"),
    ]


@pytest.fixture
def outbound(env: Env) -> Iterator[OutboundPostfix]:
    sink = Sink().start()
    postfix = OutboundPostfix.start("mydestination", DOMAIN, sink.port, [ANNA, BEN, POSTMASTER, RUEBEN, ZOE])
    try:
        yield postfix
        postfix.drain()
        assert sink.received() == [], postfix.log()[-3000:]  # nothing left the NAS
    finally:
        postfix.stop()
        sink.stop()


@pytest.mark.mailstack
def test_collector_delivers_to_the_exact_utf8_mailbox(env: Env, outbound: OutboundPostfix,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    env.stack.add_users([(env.catchall, env.password)])
    cases = _cases()
    env.fill(cases)
    config = env.write_config(local_domains=[DOMAIN], fallback_recipient=POSTMASTER,
                              delivery={"host": "127.0.0.1", "port": outbound.smtp_port})
    with caplog.at_level(logging.INFO, logger="smartpop.collector"):
        summary = service.fetch_all(env.paths, config)
    assert summary.ok, summary.lines()
    outbound.drain()
    assert env.left_on_provider() == 0
    want = {RUEBEN: [cases[0], cases[2]], ZOE: [cases[1]], BEN: [cases[1]], ANNA: [cases[3], cases[5]],
            POSTMASTER: [cases[3], cases[4]]}
    for user, expected in want.items():
        got = outbound.maildir(user)
        assert sorted(body_of(m) for m in got) == sorted(body_of(m) for m in expected), user
        for stored in got:  # the envelope recipient Postfix delivered to, exactly
            assert f"Delivered-To: {user}\n".encode() in stored, stored[:300]
    fallback = outbound.maildir(POSTMASTER)
    assert any("X-SmartPop-Fallback: m\u00fcllerchef@firma.de".encode() in m for m in fallback)
    assert "mixed scripts in the local part (Cyrillic, Latin)" in caplog.text
    assert "sent with SMTPUTF8" in caplog.text


@pytest.mark.mailstack
def test_collector_without_smtputf8_sends_that_copy_to_the_fallback(env: Env, caplog: pytest.LogCaptureFixture
                                                                    ) -> None:
    env.stack.add_users([(env.catchall, env.password)])
    cases = _cases()
    env.fill(cases)
    server = WireSmtp([ANNA, BEN, POSTMASTER, RUEBEN, ZOE], smtputf8=False).start()
    try:
        config = env.write_config(local_domains=[DOMAIN], fallback_recipient=POSTMASTER,
                                  delivery={"host": "127.0.0.1", "port": server.port})
        with caplog.at_level(logging.INFO, logger="smartpop.collector"):
            summary = service.fetch_all(env.paths, config)
    finally:
        server.stop()
    assert summary.ok, summary.lines()
    assert env.left_on_provider() == 0
    commands = server.commands()
    assert all(c.isascii() and b"SMTPUTF8" not in c for c in commands), commands
    got = {}
    for stored in server.stored():
        for rcpt in stored.rcpts:
            got.setdefault(rcpt, []).append(body_of(stored.data.replace(b"\r\n", b"\n")))
    want = {BEN: [cases[1]], ANNA: [cases[3], cases[5]],
            POSTMASTER: [cases[0], cases[1], cases[2], cases[3], cases[4]]}
    assert {r: sorted(b) for r, b in got.items()} == {r: sorted(body_of(m) for m in ms) for r, ms in want.items()}
    for written in (RUEBEN, ZOE, "Ru\u0308ben@firma.de", "m\u00fcllerchef@firma.de"):
        assert f"{written!r} (non-ASCII local part ({NOT_OFFERED}))" in caplog.text, written
    assert "'\u0430nna@firma.de' (mixed scripts in the local part (Cyrillic, Latin))" in caplog.text
