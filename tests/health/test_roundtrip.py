"""The round trip's token matching and findings: only a pending, unexpired trip of this DATA is consumed."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, Dict, List

import pytest

from smartpop.collector.headers import parse_fields
from smartpop.config.schema import parse_config
from smartpop.errors import ConfigError
from smartpop.health import roundtrip
from smartpop.paths import Paths, ensure_data_dir

NOW = 1_800_000_000.0
TOKEN = "0123456789abcdef0123456789abcdef"


def _paths(tmp_path: Path, name: str = "data") -> Paths:
    paths = Paths(tmp_path / name)
    ensure_data_dir(paths)
    return paths


def _pending(paths: Paths, token: str = TOKEN, sent_at: float = NOW, state: str = "pending") -> None:
    trip: Dict[str, Any] = {"token": token, "state": state, "sent_at": sent_at,
                            "expires_at": sent_at + roundtrip.EXPIRY, "to": "sammel@firma.test",
                            "from": "anna@firma.test", "via": "smtp.provider.test:587",
                            "reply": "250 2.0.0 queued as ABC", "error": ""}
    (paths.data / "health-state.json").write_text(json.dumps({"round_trips": [trip]}))


def _fields(token: str = TOKEN, msgid_token: str = "", extra: str = "") -> List[Any]:
    header = (f"Authentication-Results: mx.provider.test; spf=pass smtp.mailfrom=firma.test; dkim=pass "
              f"header.d=firma.test; dmarc=pass\r\n"
              f"{extra}"
              f"Received-SPF: pass (provider: domain of firma.test designates 203.0.113.10)\r\n"
              f"DKIM-Signature: v=1; a=rsa-sha256; d=firma.test; s=s1-ionos; b=AAAABBBBCCCC\r\n"
              f"Message-ID: <roundtrip.{msgid_token or token}@firma.test>\r\n"
              f"X-SmartPop-Roundtrip: {token}\r\n"
              f"Subject: SmartPop round trip test\r\n\r\n")
    return parse_fields(header.encode())


def test_pending_trip_is_consumed_once_with_the_verdicts(tmp_path: Path) -> None:
    """Matching token and Message-ID within the expiry: consumed, arrival and verdicts recorded (state 0600)."""
    paths = _paths(tmp_path)
    _pending(paths)
    assert roundtrip.consume(paths, _fields(), "sammel", now=NOW + 42) is True
    trip = roundtrip.trips(paths)[0]
    assert trip["state"] == "arrived" and trip["arrived_at"] == NOW + 42 and trip["account"] == "sammel"
    assert trip["verdicts"]["dkim-signature"] == ["d=firma.test s=s1-ionos"]
    assert "spf=pass" in trip["verdicts"]["authentication-results"][0]
    assert stat.S_IMODE((paths.data / "health-state.json").stat().st_mode) == 0o600
    finding = roundtrip.check_round_trip(trip, NOW + 60)
    assert finding is not None and finding.status == "ok", finding
    assert "came back after 42 s" in finding.summary and "dkim=pass" in finding.summary
    # A second copy (fetched again after a crash before its DELE) is consumed too; arrival stays.
    assert roundtrip.consume(paths, _fields(), "sammel", now=NOW + 99) is True
    assert roundtrip.trips(paths)[0]["arrived_at"] == NOW + 42


@pytest.mark.parametrize("case", ["unknown", "expired", "msgid_mismatch", "not_hex", "other_installation",
                                  "failed_send"])
def test_attacker_headers_never_swallow_a_message(tmp_path: Path, case: str) -> None:
    """An unknown, expired, forged or foreign token is delivered as usual, and the pending trip stays pending."""
    paths = _paths(tmp_path)
    other = _paths(tmp_path, "other")
    _pending(paths, state="failed" if case == "failed_send" else "pending")
    fields = {
        "unknown": _fields(token="f" * 32),
        # A forger who copies a real token into his own message still needs the Message-ID
        # form too; one who has neither is 'unknown'. Here: header right, Message-ID wrong.
        "msgid_mismatch": _fields(msgid_token="e" * 32),
        "not_hex": _fields(token="../../etc/passwd", msgid_token="x"),
        "expired": _fields(), "other_installation": _fields(), "failed_send": _fields(),
    }[case]
    target = other if case == "other_installation" else paths
    now = NOW + roundtrip.EXPIRY + 1 if case == "expired" else NOW + 5
    assert roundtrip.consume(target, fields, "sammel", now=now) is False
    assert roundtrip.trips(paths)[0]["state"] == ("failed" if case == "failed_send" else "pending")
    assert "arrived_at" not in roundtrip.trips(paths)[0]


def test_attacker_verdict_headers_below_the_providers_are_not_the_verdict(tmp_path: Path) -> None:
    """The topmost Authentication-Results (the provider's) decides; one forged further down does not."""
    paths = _paths(tmp_path)
    _pending(paths)
    header = (f"Authentication-Results: mx.provider.test; spf=fail smtp.mailfrom=firma.test; dmarc=fail\r\n"
              f"Authentication-Results: forged.example; spf=pass; dkim=pass; dmarc=pass\r\n"
              f"Message-ID: <roundtrip.{TOKEN}@firma.test>\r\nX-SmartPop-Roundtrip: {TOKEN}\r\n\r\n")
    assert roundtrip.consume(paths, parse_fields(header.encode()), "sammel", now=NOW + 3)
    finding = roundtrip.check_round_trip(roundtrip.trips(paths)[0], NOW + 4)
    assert finding is not None and finding.status == "warning"
    assert "spf=fail" in finding.summary and "DMARC and SPF" in finding.summary


def test_a_message_without_the_header_touches_no_file(tmp_path: Path) -> None:
    """The fast path: no header, no state read, no lock file created."""
    paths = Paths(tmp_path / "absent")
    fields = parse_fields(b"Subject: hello\r\nMessage-ID: <a@b>\r\n\r\n")
    assert roundtrip.consume(paths, fields) is False
    assert not paths.data.exists()


def test_not_back_in_time_is_a_problem_with_the_reason() -> None:
    """Pending until the expiry (a warning that says it waits), then a problem naming server, reply and address."""
    trip = {"token": TOKEN, "state": "pending", "sent_at": NOW, "expires_at": NOW + 600, "to": "sammel@firma.test",
            "via": "smtp.provider.test:587", "reply": "250 2.0.0 queued as ABC"}
    waiting = roundtrip.check_round_trip(trip, NOW + 30)
    assert waiting is not None and waiting.status == "warning" and "on its way" in waiting.summary
    late = roundtrip.check_round_trip(trip, NOW + 601)
    assert late is not None and late.status == "problem"
    for part in ("via smtp.provider.test:587", "250 2.0.0 queued as ABC", "not fetched by",
                 "catch-all account collects for sammel@firma.test"):
        assert part in late.summary
    assert roundtrip.check_round_trip(None, NOW) is None


def test_addresses_prefer_the_catch_all_and_a_local_sender() -> None:
    """To: the multidrop account's own address; From: the relay login when it is local, else the fallback."""
    base: Dict[str, Any] = {
        "accounts": [{"name": "anna", "protocol": "pop3", "host": "pop.p.test", "port": 995, "security": "ssl",
                      "username": "anna@firma.test", "password": "x", "mode": "single",
                      "deliver_to": "anna@firma.test"},
                     {"name": "sammel", "protocol": "pop3", "host": "pop.p.test", "port": 995, "security": "ssl",
                      "username": "sammel@firma.test", "password": "x"}],
        "local_domains": ["firma.test"], "fallback_recipient": "postmaster@firma.test",
        "relay": {"enabled": True, "host": "smtp.p.test", "port": 587, "security": "starttls",
                  "username": "12345-customer", "password": "y"},
    }
    assert roundtrip.addresses(parse_config(base)) == {"to": "sammel@firma.test", "from": "postmaster@firma.test"}
    base["relay"]["username"] = "anna@firma.test"
    assert roundtrip.addresses(parse_config(base))["from"] == "anna@firma.test"
    base["accounts"] = []
    with pytest.raises(ConfigError):
        roundtrip.addresses(parse_config(base))


@pytest.mark.parametrize("case", ["not_hex", "msgid_mismatch"])
def test_a_header_that_cannot_be_ours_never_waits_for_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               case: str) -> None:
    """A malformed or mismatched token is delivered even while another process holds the state lock.

    Before, such a message took the lock too, and a busy lock kept a stranger's message on the
    server (ProtocolError) for that run; a genuine candidate still waits for the lock.
    """
    from smartpop import fsutil
    from smartpop.errors import ProtocolError

    paths = _paths(tmp_path)
    _pending(paths)
    monkeypatch.setattr(roundtrip, "LOCK_TIMEOUT", 0.2)
    fields = _fields(token="../../etc/passwd", msgid_token="x") if case == "not_hex" else _fields(msgid_token="e" * 32)
    paths.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    with fsutil.locked(paths.locks / "health-state.lock", timeout=1):
        assert roundtrip.consume(paths, fields, "sammel", now=NOW + 5) is False
        with pytest.raises(ProtocolError):
            roundtrip.consume(paths, _fields(), "sammel", now=NOW + 5)
    assert roundtrip.trips(paths)[0]["state"] == "pending"


@pytest.mark.parametrize("content", [
    b'{"round_trips": [{"token": "0123456789abcdef01',  # cut by a power cut
    b"",
    b"\0" * 64,
    b'{"round_trips": [{"token": "0123456789abcdef0123456789abcdef", "state": "pending", "expires_at": "soon"}]}',
    b'{"round_trips": [{"token": "0123456789abcdef0123456789abcdef", "state": "arrived", "arrived_at": [1]}]}',
    b'{"round_trips": [{"token": "0123456789abcdef0123456789abcdef", "state": "arrived", "sent_at": "x", '
    b'"arrived_at": 1800000000, "verdicts": {"authentication-results": [5, null]}}]}',
    b'{"round_trips": [{"token": "0123456789abcdef0123456789abcdef", "state": "arrived", '
    b'"arrived_at": 1800000000, "verdicts": ["spf=pass"]}]}',
    b'{"round_trips": "many"}',
    b"[]",
])
def test_a_damaged_state_file_never_holds_mail_or_breaks_the_report(tmp_path: Path, content: bytes) -> None:
    """Truncated, empty or type-damaged health-state.json: no exception; mail is routed or consumed, never stuck.

    Before, a number field holding text raised ValueError in consume(): the collector set the
    message aside as unplaceable on every run, and the report and the page's poll failed too.
    """
    paths = _paths(tmp_path)
    (paths.data / "health-state.json").write_bytes(content)
    assert roundtrip.consume(paths, _fields(), "sammel", now=NOW + 5) in (True, False)
    finding = roundtrip.latest_finding(paths, NOW + 5)
    assert finding is None or finding.status in ("ok", "warning", "problem")
    assert roundtrip.consume(paths, parse_fields(b"Subject: hi\r\n\r\n"), "sammel") is False


def test_a_reply_that_echoes_the_message_id_does_not_carry_the_token(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Exchange answers DATA with '250 2.6.0 <Message-ID> Queued': the stored reply and the finding hide the token."""
    from smartpop.health import probes

    paths = _paths(tmp_path)
    config = parse_config({
        "accounts": [{"name": "sammel", "protocol": "pop3", "host": "pop.p.test", "username": "sammel@firma.test",
                      "password": "x"}],
        "local_domains": ["firma.test"], "fallback_recipient": "postmaster@firma.test",
        "relay": {"enabled": True, "host": "smtp.p.test", "port": 587, "security": "starttls",
                  "username": "anna@firma.test", "password": "y"}})

    def echo(host: str, port: int, security: str, username: str, password: Any, ca_file: str,
             **options: Any) -> probes.LoginResult:
        msgid = options["envelope"].data.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        return probes.LoginResult(host, port, security, username, stage="done", logged_in=True, auth_sent=True,
                                  sent=True, reply_code=250, reply=f"2.6.0 {msgid.upper()} [InternalId=1] Queued")

    monkeypatch.setattr(probes, "probe_relay_login", echo)
    trip = roundtrip.start(paths, config, ca_file="/nonexistent", now=NOW)
    token = trip["token"]
    stored = (paths.data / "health-state.json").read_text()
    assert stored.count(token) == 1 and token.upper() not in stored  # only the token field itself
    assert "<token>" in trip["reply"]
    finding = roundtrip.latest_finding(paths, NOW + 5)
    assert finding is not None and token not in json.dumps(finding.as_dict()).lower()


def test_a_trip_stored_with_the_token_in_its_reply_shows_no_token() -> None:
    """A reply recorded before replies were cleaned: the finding (summary, details) still hides the token."""
    trip = {"token": TOKEN, "state": "failed", "sent_at": NOW, "expires_at": NOW + 600, "to": "sammel@firma.test",
            "via": "smtp.provider.test:587", "reply": f"554 <roundtrip.{TOKEN.upper()}@firma.test> rejected",
            "error": f"refused roundtrip.{TOKEN}"}
    finding = roundtrip.check_round_trip(trip, NOW + 30)
    assert finding is not None and finding.status == "problem" and "<token>" in finding.summary
    assert TOKEN not in json.dumps(finding.as_dict()).lower()
