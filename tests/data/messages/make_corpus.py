# ruff: noqa: E501, RUF001  (a data file: one message per line reads best; the en dash is test data)
"""Writes the hostile/odd message corpus and expected.json (run once; the outputs are committed).

Addresses: local domain firma.de; users anna, ben; alias info -> anna, ben; fallback
postmaster; the collected catch-all logs in as sammel@firma.de. expected.json maps each
file to the local mailboxes that must receive it (exactly once each).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
H = "Return-Path: <sender@remote.example>\nFrom: Sender <sender@remote.example>\nDate: Sat, 28 Nov 2026 06:00:00 +0000\n"
corpus = {}


def add(name: str, data: bytes, rcpts: list) -> None:
    corpus[name] = (data, rcpts)


def simple(envelope: str, subject: str, body: str = "Hello.\nSecond line.\n", mid: str = "", to: str = "To: team@firma.de\n") -> bytes:
    mid = mid or f"<{subject.replace(' ', '-')}@remote.example>"
    return (envelope + H + to + f"Subject: {subject}\nMessage-ID: {mid}\n\n" + body).encode()


add("01-delivered-to.eml", simple("Delivered-To: anna@firma.de\n", "plain delivered-to"), ["anna"])
add("02-crlf.eml", simple("Delivered-To: ben@firma.de\n", "crlf line ends").replace(b"\n", b"\r\n"), ["ben"])
add("03-mixed-line-ends.eml", b"Delivered-To: anna@firma.de\r\n" + H.encode() + b"Subject: mixed\nMessage-ID: <mixed@remote.example>\r\n\r\nline one\r\nline two\nline three\r\n", ["anna"])
add("04-8bit-headers.eml", b"X-Original-To: ben@firma.de\n" + H.encode() + "Subject: Grüße aus Köln – 8bit\n".encode() + b"X-Latin1: caf\xe9\nMessage-ID: <8bit@remote.example>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + "Größere Übung, Straße.\n".encode(), ["ben"])
add("05-utf8-display-name.eml", (H + 'To: "Jörg Müller" <anna@firma.de>\nSubject: utf8 display\nMessage-ID: <utf8name@remote.example>\n\nbody\n').encode(), ["anna"])
enc = base64.b64encode(b"anna@firma.de").decode()
add("06-rfc2047-encoded-address.eml", (H + f"To: =?utf-8?B?{enc}?=\nSubject: encoded address\nMessage-ID: <enc1@remote.example>\n\nbody\n").encode(), ["anna"])
add("07-rfc2047-display.eml", (H + "To: =?iso-8859-1?Q?J=F6rg_M=FCller?= <ben@firma.de>\nSubject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\nMessage-ID: <enc2@remote.example>\n\nbody\n").encode(), ["ben"])
add("08-no-message-id.eml", ("Delivered-To: anna@firma.de\n" + H + "Subject: no message id\n\nno id here\n").encode(), ["anna"])
add("09a-duplicate-id-first.eml", simple("Delivered-To: anna@firma.de\n", "dup id one", "first text\n", mid="<same-id@remote.example>"), ["anna"])
add("09b-duplicate-id-other-text.eml", simple("Delivered-To: anna@firma.de\n", "dup id two", "a different message that reuses the id\n", mid="<same-id@remote.example>"), ["anna"])
copy = simple("Delivered-To: ben@firma.de\n", "multidrop copy", "identical copy\n", mid="<copy@remote.example>")
add("09c-multidrop-copy.eml", copy, ["ben"])
add("09d-multidrop-copy-again.eml", copy, [])
add("10-1000-char-lines.eml", simple("Delivered-To: anna@firma.de\n", "long lines", ("L" * 1000 + "\n") * 5 + "x" * 5000 + "\n"), ["anna"])
long_header = "X-Long: " + " ".join(f"word{i}" for i in range(400)) + "\n"
folded = "References: " + "\n ".join(f"<ref{i}@remote.example>" for i in range(120)) + "\n"
add("11-998plus-header.eml", simple("Delivered-To: ben@firma.de\n" + long_header + folded, "huge header"), ["ben"])
add("12-nul-bytes.eml", simple("Delivered-To: anna@firma.de\n", "nul bytes", "before\x00after\nsecond\x00\x00line\n"), ["anna"])
add("13-no-blank-line.eml", ("Delivered-To: ben@firma.de\n" + H + "Subject: no separator\nThis line starts the body without a blank line\n\nmore body\n").encode(), ["ben"])
inner = "Delivered-To: ben@firma.de\nX-Original-To: ben@firma.de\nFrom: inner@remote.example\nTo: ben@firma.de\nSubject: inner\n\ninner body\n"
nested = ("Delivered-To: anna@firma.de\n" + H + "To: anna@firma.de\nSubject: forwarded message\nMessage-ID: <nested@remote.example>\nMIME-Version: 1.0\n"
          "Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: text/plain\n\nsee attached\n--XYZ\nContent-Type: message/rfc822\n\n"
          + inner + "--XYZ--\n")
add("14-nested-rfc822.eml", nested.encode(), ["anna"])
add("15-several-delivered-to.eml", simple("Delivered-To: anna@firma.de\nDelivered-To: ben@firma.de\n", "two delivered-to"), ["anna", "ben"])
add("16-foreign-then-local-delivered-to.eml", simple("Delivered-To: list@lists.example.org\nDelivered-To: ben@firma.de\n", "list then local"), ["ben"])
add("17-undisclosed-received-for.eml", ("Received: from mx.remote.example by mx.provider.example with ESMTPS id 1\n\tfor <anna@firma.de>; Sat, 28 Nov 2026 06:00:00 +0000\n" + H + "To: undisclosed-recipients:;\nSubject: bcc via received\nMessage-ID: <bcc@remote.example>\n\nbody\n").encode(), ["anna"])
add("18-undisclosed-only.eml", (H + "To: undisclosed-recipients:;\nSubject: nothing to go by\nMessage-ID: <nothing@remote.example>\n\nbody\n").encode(), ["postmaster"])
# Issue 11: a marker anyone can write (the old domain form) no longer pushes a message into the fallback.
add("19-loop-marker.eml", simple("X-SmartPop-Loop: firma.de\nDelivered-To: anna@firma.de\n", "already passed smartpop"), ["anna"])
add("20-own-address-then-original-to.eml", simple("Delivered-To: sammel@firma.de\nX-Original-To: ben@firma.de\n", "catch-all then original"), ["ben"])
add("21-envelope-to-list.eml", simple("Envelope-to: anna@firma.de, ben@firma.de\n", "exim envelope-to"), ["anna", "ben"])
add("22-x-envelope-to.eml", simple("X-Envelope-To: <ben@firma.de>\n", "x-envelope-to"), ["ben"])
add("23-x-rcpt-to.eml", simple("X-RCPT-TO: <anna@firma.de>\n", "x-rcpt-to"), ["anna"])
add("24-alias.eml", simple("Delivered-To: info@firma.de\n", "to the alias"), ["anna", "ben"])
add("25-non-local-only.eml", simple("Delivered-To: someone@other.example\n", "not for us", to="To: someone@other.example\n"), ["postmaster"])
add("26-unknown-local-user.eml", simple("Delivered-To: nobody@firma.de\n", "unknown user"), ["postmaster"])
add("27-dot-lines.eml", simple("Delivered-To: anna@firma.de\n", "dots", ".\n..\n.leading\n...three\nend\n"), ["anna"])
add("28-empty-body.eml", ("Delivered-To: ben@firma.de\n" + H + "Subject: empty body\nMessage-ID: <empty@remote.example>\n").encode(), ["ben"])
add("29-no-headers.eml", b"just some text\nwith no header at all\n", ["postmaster"])
add("30-broken-return-path.eml", (b"Return-Path: <not an address>\nDelivered-To: anna@firma.de\nFrom: x@remote.example\nSubject: broken return path\nMessage-ID: <brp@remote.example>\n\nbody\n"), ["anna"])
add("31-local-sender.eml", (b"Return-Path: <ben@firma.de>\nDelivered-To: anna@firma.de\nFrom: ben@firma.de\nSubject: local sender\nMessage-ID: <ls@remote.example>\n\nbody\n"), ["anna"])
add("32-upper-case.eml", simple("DELIVERED-TO: ANNA@FIRMA.DE\n", "upper case"), ["anna"])
add("33-comment-in-address.eml", (H + "To: anna@firma.de (Anna Example)\nSubject: comment\nMessage-ID: <cm@remote.example>\n\nbody\n").encode(), ["anna"])
add("34-resent-to.eml", (H + "Resent-To: ben@firma.de\nTo: anna@firma.de\nSubject: resent\nMessage-ID: <rs@remote.example>\n\nbody\n").encode(), ["ben"])
add("35-received-for-bare.eml", ("Received: by mx.provider.example for anna@firma.de; Sat, 28 Nov 2026 06:00:00 +0000\n" + H + "To: undisclosed-recipients:;\nSubject: bare for\nMessage-ID: <bf@remote.example>\n\nbody\n").encode(), ["anna"])
add("36-cc-with-quoted-comma.eml", (H + 'To: a@other.example\nCc: "Ben, B." <ben@firma.de>, anna@firma.de\nSubject: cc\nMessage-ID: <cc@remote.example>\n\nbody\n').encode(), ["ben", "anna"])
add("37-latin1-body.eml", b"Delivered-To: anna@firma.de\n" + H.encode() + b"Subject: latin1\nMessage-ID: <l1@remote.example>\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\nGr\xfc\xdfe, \xc4rger, \xdcbel\n", ["anna"])
add("38-display-name-with-address.eml", (H + 'To: "ben@firma.de" <anna@firma.de>\nSubject: tricky display\nMessage-ID: <td@remote.example>\n\nbody\n').encode(), ["anna"])
# Issue 11 / 12: local parts an MTA could rewrite into another destination, or that would lose their head.
add("39-percent-hack.eml", simple("Delivered-To: victim%evil.example@firma.de\n", "percent hack", to="To: undisclosed-recipients:;\n"), ["postmaster"])
add("40-bang-path.eml", simple("X-Original-To: evil.example!victim@firma.de\n", "bang path", to="To: undisclosed-recipients:;\n"), ["postmaster"])
add("41-quoted-local-part.eml", simple('Delivered-To: "victim@evil.example"@firma.de\n', "quoted local part", to="To: undisclosed-recipients:;\n"), ["postmaster"])
add("42-source-route.eml", simple("Envelope-To: <@evil.example:anna@firma.de>\n", "source route", to="To: undisclosed-recipients:;\n"), ["postmaster"])
add("43-non-ascii-local-part.eml", simple("Delivered-To: rüben@firma.de\n", "non-ascii local part", to="To: undisclosed-recipients:;\n"), ["postmaster"])
add("44-non-ascii-mixed.eml", simple("Delivered-To: zoëanna@firma.de\nDelivered-To: ben@firma.de\n", "non-ascii and plain", to="To: undisclosed-recipients:;\n"), ["ben", "postmaster"])
# Only what the provider wrote counts: its envelope headers and Received on top, the sender's below.
PROVIDER = "Return-Path: <sender@remote.example>\nX-Original-To: ben@firma.de\nDelivered-To: sammel@firma.de\nReceived: from mail.remote.example by mx.provider.example (Postfix) with ESMTPS id P1\n\tfor <sammel@firma.de>; Sat, 28 Nov 2026 06:00:00 +0000\n"
add("45-deep-envelope-ignored.eml", (PROVIDER + "Delivered-To: victim%evil.example@firma.de\nDelivered-To: anna@firma.de\nFrom: Sender <sender@remote.example>\nTo: anna@firma.de\nSubject: deep envelope\nMessage-ID: <deep@remote.example>\n\nbody\n").encode(), ["ben"])
add("46-exim-catchall.eml", (b"Return-path: <sender@remote.example>\nEnvelope-to: anna@firma.de, ben@firma.de\nDelivery-date: Sat, 28 Nov 2026 06:00:01 +0000\nReceived: from mail.remote.example ([192.0.2.1])\n\tby mx.provider.example with esmtps (Exim 4.96)\n\tid 1abc; Sat, 28 Nov 2026 06:00:00 +0000\nFrom: Sender <sender@remote.example>\nTo: team@firma.de\nSubject: exim catch-all\nMessage-ID: <exim@remote.example>\n\nbody\n"), ["anna", "ben"])
add("47-bcc-received-for.eml", (b"Return-Path: <sender@remote.example>\nDelivered-To: sammel@firma.de\nReceived: from mail.remote.example by mx.provider.example (Postfix) with ESMTPS id P2\n\tfor <ben@firma.de>; Sat, 28 Nov 2026 06:00:00 +0000\nReceived: from sender-pc by mail.remote.example with ESMTPSA id S1\n\tfor <anna@firma.de>; Sat, 28 Nov 2026 05:59:59 +0000\nFrom: Sender <sender@remote.example>\nTo: anna@firma.de\nSubject: bcc\nMessage-ID: <bccrf@remote.example>\n\nbody\n"), ["ben"])

if __name__ == "__main__":
    for old in HERE.glob("*.eml"):
        old.unlink()
    for name, (data, _) in corpus.items():
        (HERE / name).write_bytes(data)
    (HERE / "expected.json").write_text(json.dumps({n: r for n, (_, r) in corpus.items()}, indent=1) + "\n")
    print(len(corpus), "messages")
