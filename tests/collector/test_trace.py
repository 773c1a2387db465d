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
