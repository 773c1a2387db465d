"""The DNS checks against a local authoritative server: good, broken and missing zones, exact statuses."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from smartpop.config.schema import Config, parse_config
from smartpop.health import checks
from smartpop.health.dnsquery import Resolver, evaluate_spf
from smartpop.health.findings import Finding
from smartpop.health.service import check_domain, health_domains


def config(relay: bool = True, relay_host: str = "smtp.ionos.de", **extra: Any) -> Config:
    """A config collecting from IONOS (pop.ionos.de), relaying through smtp.ionos.de when `relay`."""
    document: Dict[str, Any] = {
        "accounts": [{"name": "sammel", "protocol": "pop3", "host": "pop.ionos.de", "username": "sammel@good.test",
                      "password": "pw-Sammel-123"}],
        "local_domains": ["good.test"], "fallback_recipient": "postmaster@good.test",
        "relay": {"enabled": relay, "host": relay_host, "port": 587, "security": "starttls",
                  "username": "relay@good.test", "password": "pw-Relay-123"},
    }
    document.update(extra)
    return parse_config(document)


def by_check(findings: List[Finding]) -> Dict[str, str]:
    """check id -> status (each check appears once per domain)."""
    result: Dict[str, str] = {}
    for finding in findings:
        assert finding.check not in result, finding
        assert finding.summary.endswith("."), finding.summary
        result[finding.check] = finding.status
    return result


def find(findings: List[Finding], check: str) -> Optional[Finding]:
    """The finding of `check`, if any."""
    return next((f for f in findings if f.check == check), None)


def test_good_domain_is_ok_everywhere(resolver: Resolver) -> None:
    """MX at the provider, one SPF with IONOS's include, IONOS's DKIM key, DMARC p=reject: all ok."""
    findings = check_domain(resolver, "good.test", config())
    assert by_check(findings) == {"mx": "ok", "spf.record": "ok", "spf.relay": "ok", "dkim": "ok", "dmarc": "ok"}
    dmarc = find(findings, "dmarc")
    assert dmarc is not None and dmarc.details["policy"] == "reject" and "p=reject" in dmarc.summary
    spf = find(findings, "spf.record")
    assert spf is not None and spf.details["lookups"] == 1 and spf.details["verdict_for_other_hosts"] == "fail"


def test_broken_domain(resolver: Resolver) -> None:
    """MX elsewhere, SPF without the relay, p=reject with no DKIM key."""
    findings = check_domain(resolver, "broken.test", config())
    assert by_check(findings) == {"mx": "warning", "spf.record": "ok", "spf.relay": "problem", "dkim": "warning",
                                  "dmarc": "warning"}
    mx = find(findings, "mx")
    assert mx is not None and "mail.elsewhere.test" in mx.summary and "IONOS" in mx.summary
    relay = find(findings, "spf.relay")
    assert relay is not None and "203.0.113.10" in relay.summary and "_spf-eu.ionos.com" in relay.summary
    dkim = find(findings, "dkim")
    assert dkim is not None and "s1-ionos._domainkey.broken.test" in dkim.summary


@pytest.mark.parametrize(("domain", "spf_status", "words"), [
    ("twospf.test", "problem", "2 SPF records"),
    ("plusall.test", "warning", "every server"),
    ("neutral.test", "warning", "?all"),
    ("toomany.test", "problem", "Too many DNS lookups"),
])
def test_spf_record_faults(resolver: Resolver, domain: str, spf_status: str, words: str) -> None:
    """Two records, +all, ?all and more than 10 lookups, each judged by pyspf's evaluation."""
    findings = check_domain(resolver, domain, config())
    spf = find(findings, "spf.record")
    assert spf is not None and spf.status == spf_status and words in spf.summary, spf
    # A broken record is not judged for the relay as well (one finding says what to fix).
    relay = find(findings, "spf.relay")
    assert (relay is None) == (spf_status == "problem")


def test_missing_domain(resolver: Resolver) -> None:
    """A domain the DNS does not know: one problem (MX), no SPF/DKIM/DMARC findings that only repeat it."""
    findings = check_domain(resolver, "missing.test", config())
    assert by_check(findings) == {"mx": "problem"}
    mx = find(findings, "mx")
    assert mx is not None and "does not exist" in mx.summary and "missing.test" in mx.summary


def test_relay_off_warns_that_the_nas_route_is_unknown(resolver: Resolver) -> None:
    """With the relay off the NAS sends itself: SPF would need its public address, which SmartPop cannot see."""
    findings = check_domain(resolver, "good.test", config(relay=False))
    relay = find(findings, "spf.relay")
    assert relay is not None and relay.status == "warning" and "public IP address" in relay.summary


def test_relay_without_known_include_is_evaluated_by_address(resolver: Resolver) -> None:
    """An unknown relay host is judged by pyspf for its addresses: outside the SPF ranges is a problem."""
    findings = check_domain(resolver, "good.test", config(relay_host="mail.elsewhere.test"))
    relay = find(findings, "spf.relay")
    assert relay is not None and relay.status == "problem" and "198.51.100.7" in relay.summary


def test_dns_error_is_a_warning_not_a_crash() -> None:
    """No DNS server answering: each look-up becomes a warning that says to check the NAS's DNS."""
    silent = Resolver(["127.0.0.1"], port=9, timeout=0.5)  # discard port: nothing answers
    findings = check_domain(silent, "good.test", config())
    assert {f.status for f in findings} == {"warning"}
    assert "DNS" in findings[0].summary


def test_pyspf_evaluation_uses_the_given_resolver(resolver: Resolver) -> None:
    """evaluate_spf asks the local server (the provider's range passes, others fail)."""
    assert evaluate_spf(resolver, "good.test", "203.0.113.10", "smtp.ionos.de").result == "pass"
    assert evaluate_spf(resolver, "good.test", "192.0.2.1", "x.test").result == "fail"


def test_health_domains_include_sender_relay_domains() -> None:
    """local_domains, a single-drop deliver_to's domain and each per-sender relay's domain."""
    cfg = config(relay=True)
    cfg.relay.sender_relays = parse_config({"relay": {"sender_relays": [
        {"sender": "@zweit.test", "host": "smtp.ionos.de", "username": "u", "password": "pw-Zweit-123"}]}}
    ).relay.sender_relays
    assert health_domains(cfg) == ["good.test", "zweit.test"]


def test_dmarc_tags_and_dkim_key() -> None:
    """The small record readers: DMARC tags, and an empty p= as a revoked DKIM key."""
    assert checks.dmarc_tags("v=DMARC1; p=quarantine; pct=50")["p"] == "quarantine"
    from smartpop.health.dnsquery import Answer

    assert not checks.dkim_key_found(Answer("s._domainkey.x", "TXT", "found", ["v=DKIM1; p="]))
    assert checks.dkim_key_found(Answer("s._domainkey.x", "TXT", "found", ["v=DKIM1; k=rsa; p=MIGf"]))
