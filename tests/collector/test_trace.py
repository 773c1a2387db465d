"""What a copy's envelope takes from the header (no servers)."""

from __future__ import annotations

from smartpop.collector import headers
from smartpop.collector.trace import return_path


def test_return_path() -> None:
    def rp(text: str) -> str:
        return return_path(headers.parse_fields(text.encode()))

    assert rp("Return-Path: <a@b.de>\n\n") == "a@b.de"
    assert rp("Return-Path: <>\n\n") == ""
    assert rp("Return-Path: <not an address>\n\n") == ""
    assert rp("Subject: none\n\n") == ""


def test_trace_lines_name_the_copy_and_why_it_is_there() -> None:
    from smartpop.collector import recipients
    from smartpop.collector.trace import FALLBACK_NOTES, REDELIVERED_HEADER, TraceLines

    fields = headers.parse_fields(b"Message-ID: <m@x>\n\n")
    lines = TraceLines("pop.example.de", "nas", "pop3", b"k" * 32)
    one = lines.lines(("sammel", "", "", "1"), fields, ["anna@firma.de"], None).decode()
    assert one.startswith("Received: from pop.example.de by nas (SmartPop ") and "\twith POP3 id " in one
    assert "\r\n\tfor <anna@firma.de>; " in one and one.endswith("\r\n")
    assert f"{headers.LOOP_HEADER}: {recipients.loop_marker(b'k' * 32, '<m@x>')}\r\n" in one
    assert REDELIVERED_HEADER not in one and "X-SmartPop-Fallback" not in one
    refused = {f"u{n}@firma.de": "550 no such user" for n in range(FALLBACK_NOTES + 5)}
    many = lines.lines(("sammel", "", "", "1"), fields, ["a@firma.de", "b@firma.de"], refused, True).decode()
    assert "\tfor <" not in many and f"{REDELIVERED_HEADER}: possible duplicate" in many
    assert many.count("X-SmartPop-Fallback:") == FALLBACK_NOTES + 1
    assert "X-SmartPop-Fallback: and 5 more recipients (see the log)" in many


def test_the_from_address_and_header_text_for_the_trail() -> None:
    from smartpop.collector.trace import address_in, header_text

    assert header_text("=?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more") == "Grüße and more"
    assert header_text(None) == ""
    assert address_in(header_text("Anna <anna@firma.de>")) == "anna@firma.de"
