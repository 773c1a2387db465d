"""Header handling for reinjection (no servers)."""

from __future__ import annotations

from smartpop.collector import headers


def test_rewrite_keeps_every_other_byte() -> None:
    raw = b"Delivered-To: a@firma.de\r\nSubject: x\r\ndelivered-to: b@firma.de\r\n\r\nDelivered-To: body@x\r\n"
    out = headers.rewrite_for_reinjection(raw)
    assert out == (b"X-Original-Delivered-To: a@firma.de\r\nSubject: x\r\nX-Original-Delivered-To: b@firma.de\r\n"
                   b"\r\nDelivered-To: body@x\r\n")
