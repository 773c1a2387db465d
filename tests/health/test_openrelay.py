"""The open-relay check over sample postconf outputs: ok only for a closed relay and a LAN-only mynetworks."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from smartpop.health.openrelay import check_open_relay
from smartpop.relay.postfix import parse_postconf

STOCK = """\
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination
smtpd_recipient_restrictions =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128 192.168.1.0/24
mynetworks_style = subnet
smtpd_sasl_auth_enable = yes
inet_interfaces = all
"""


def _facts(text: str, **extra: Any) -> Dict[str, Any]:
    return {"time": "2026-11-30T10:00:00Z", "params": parse_postconf(text), "services": ["smtp/inet"], **extra}


def _replace(name: str, value: str) -> str:
    return "\n".join(f"{name} = {value}" if line.startswith(name + " ") else line for line in STOCK.splitlines())


def test_stock_mailplus_rules_are_ok_in_plain_words() -> None:
    """permit_mynetworks + permit_sasl_authenticated + defer_unauth_destination, loopback and a LAN: ok."""
    finding = check_open_relay(_facts(STOCK), relay_enabled=True)
    assert finding is not None and finding.status == "ok", finding
    assert "not an open relay" in finding.summary and "trusted networks and logged-in users" in finding.summary
    assert "192.168.1.0/24" in finding.summary


@pytest.mark.parametrize("name, value, words", [
    ("mynetworks", "127.0.0.0/8 0.0.0.0/0", "0.0.0.0/0"),
    ("mynetworks", "127.0.0.0/8 [::1]/128 203.0.113.0/24", "203.0.113.0/24"),
    ("mynetworks", "[::]/0", "[::]/0"),
    ("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated", "neither"),
    ("smtpd_relay_restrictions", "permit, reject_unauth_destination", "lets anyone through with permit"),
])
def test_open_relay_configurations_are_a_problem(name: str, value: str, words: str) -> None:
    """A public or everything range in mynetworks, or rules without reject_unauth_destination: problem."""
    finding = check_open_relay(_facts(_replace(name, value)), relay_enabled=True)
    assert finding is not None and finding.status == "problem", finding
    assert words in finding.summary and "reject_unauth_destination" in finding.summary


def test_recipient_restrictions_guard_counts_and_master_cf_overrides_are_judged() -> None:
    """An older Postfix guards in smtpd_recipient_restrictions; a submission service's own mynetworks is seen."""
    older = _replace("smtpd_relay_restrictions", "").replace(
        "smtpd_recipient_restrictions =", "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination")
    assert check_open_relay(_facts(older), True).status == "ok"  # type: ignore[union-attr]
    overridden = _facts(STOCK, services=["smtp/inet", "submission/inet"],
                        overrides={"submission/inet": {"mynetworks": "0.0.0.0/0"}})
    finding = check_open_relay(overridden, True)
    assert finding is not None and finding.status == "problem" and "submission (master.cf)" in finding.summary


def test_tables_and_missing_facts_are_warnings() -> None:
    """mynetworks from a file, a check_ table before the guard, no record yet, a failed postconf: warnings."""
    assert check_open_relay(_facts(_replace("mynetworks", "/etc/postfix/network_table")), True).status == "warning"  # type: ignore[union-attr]
    table = _replace("smtpd_relay_restrictions", "check_client_access hash:/etc/x, defer_unauth_destination")
    assert check_open_relay(_facts(table), True).status == "warning"  # type: ignore[union-attr]
    none: Optional[Dict[str, Any]] = None
    assert check_open_relay(none, relay_enabled=False) is None
    waiting = check_open_relay(none, relay_enabled=True)
    assert waiting is not None and waiting.status == "warning" and "root task" in waiting.summary
    failed = check_open_relay({"error": "postconf failed"}, True)
    assert failed is not None and failed.status == "warning" and "postconf failed" in failed.summary


def test_recording_the_facts_on_a_full_disk_does_not_fail_the_applied_relay(tmp_path, monkeypatch, caplog) -> None:
    from smartpop.relay import relayfacts

    monkeypatch.setattr(relayfacts, "collect", lambda tools, postfix_dir: {"params": {}})
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the state dir should be: every write under it fails, also as root")
    relayfacts.record(not_a_dir, None, tmp_path)  # type: ignore[arg-type]
    assert "could not write" in caplog.text and not (tmp_path / relayfacts.FILE).exists()
