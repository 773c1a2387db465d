"""The Health page (issue 15): stored report, "Run checks now" with progress, the round trip, the overview's pill.

Every check runs for real against local servers only: a dnslib zone server for the DNS, an
aiosmtpd submission server for the relay login and the round trip, a TLS server for the
account's certificate. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest
from webrig import Browserless, Rig

from smartpop.collector.headers import parse_fields, split_header
from smartpop.health import roundtrip, service
from smartpop.health.dnsquery import Resolver
from support.browser import chromium
from support.certs import make_certs
from support.dnszone import ZoneServer
from support.samples import sample_document
from support.upstream_smtp import Upstream

ZONE = """
firma.de.          300 IN MX  10 mx00.ionos.de.
firma.de.          300 IN TXT "v=spf1 include:_spf-eu.ionos.com -all"
_dmarc.firma.de.   300 IN TXT "v=DMARC1; p=none"
_spf-eu.ionos.com. 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
"""
if TYPE_CHECKING:  # a module-level TestCerts would make pytest try to collect it
    from support.certs import TestCerts

RELAY_PASSWORD = "s3cret-Relay!"  # sample_document's relay password


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Any]]:
    """The zone server, the provider's submission server (STARTTLS) and a TLS stand-in for its POP3S port."""
    certs: TestCerts = make_certs(tmp_path / "certs")
    zone = ZoneServer(ZONE).start()
    submission = Upstream(certs, "starttls", {"relay@firma.de": RELAY_PASSWORD}).start()
    pop3s = Upstream(certs, "ssl", {}).start()
    monkeypatch.setattr(service, "Resolver", lambda: Resolver(["127.0.0.1"], port=zone.port, timeout=3.0))
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))  # the relay's CA bundle, as Postfix's
    yield {"certs": certs, "submission": submission, "pop3s": pop3s}
    submission.stop()
    pop3s.stop()
    zone.stop()


@pytest.fixture
def health_rig(servers: Dict[str, Any]) -> Iterator[Rig]:
    """The sample config pointed at the local servers, relay on."""
    document = sample_document()
    document["accounts"][0].update(host="localhost", port=servers["pop3s"].port,
                                   ca_file=str(servers["certs"].ca_cert))
    document["relay"].update(enabled=True, host="localhost", port=servers["submission"].port)
    environment = Rig(document)
    yield environment
    environment.stop()


def _wait_idle(client: Browserless, timeout: float = 60.0) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: Dict[str, Any] = client.get("/health/api").json()
        if not state["checks"]["running"] and not state["round_trip"]["sending"]:
            return state
        time.sleep(0.2)
    raise AssertionError("the health job did not finish")


def test_run_checks_now_and_the_round_trip_through_the_cgi(health_rig: Rig, servers: Dict[str, Any],
                                                           secrets_of_config: List[str]) -> None:
    """Run checks: CSRF required, progress, stored findings shown; round trip sent, back, time shown; no secret."""
    client = Browserless(health_rig, "admin")
    page = client.get("/health/")
    assert page.status_code == 200 and "have not run yet" in page.text and 'id="nav-health"' in page.text
    overview = client.get("/").text
    assert 'id="health-pill"' in overview and "not checked" in overview
    assert client.post("/health/api/run").status_code == 403  # no CSRF token
    started = client.post("/health/api/run", headers={"X-SmartPop-CSRF": client.csrf()})
    assert started.status_code == 200 and started.json()["ok"]
    state = _wait_idle(client)
    assert state["checks"]["error"] is None and state["checks"]["done"] == state["checks"]["total"] > 0
    page = client.get("/health/")
    assert 'data-check="relay.login" data-subject="relay"' in page.text
    report = service.load_report(health_rig.paths)
    assert report is not None
    statuses = {(f["check"], f["subject"]): f["status"] for f in report["findings"]}
    assert statuses[("relay.login", "relay")] == "ok" and statuses[("spf.record", "firma.de")] == "ok"
    assert statuses[("certificate", f"localhost:{servers['pop3s'].port}")] == "ok"
    assert servers["submission"].messages == []  # the checks send no mail

    sent = client.post("/health/api/round-trip", headers={"X-SmartPop-CSRF": client.csrf()})
    assert sent.status_code == 200
    state = _wait_idle(client)
    assert state["round_trip"]["error"] is None and state["round_trip"]["finding"]["state"] == "pending"
    message = servers["submission"].wait_messages(1)[0]
    assert message.rcpt_tos == ["sammel@firma.de"] and message.user == "relay@firma.de"
    # The collector's part (tests/collector/test_roundtrip.py): the fetched message's header.
    assert roundtrip.consume(health_rig.paths, parse_fields(split_header(message.data)[0]), "sammelpostfach")
    state = client.get("/health/api").json()
    assert state["round_trip"]["finding"]["status"] == "ok" and state["round_trip"]["finding"]["seconds"] >= 0
    page = client.get("/health/")
    assert 'id="roundtrip-time"' in page.text and "came back after" in page.text
    token = roundtrip.trips(health_rig.paths)[0]["token"]
    for body in client.bodies:
        assert token not in body
        for secret in secrets_of_config:
            assert secret not in body


@pytest.mark.browser
def test_health_page_in_the_browser(health_rig: Rig) -> None:
    """Click Run checks now: progress, then the findings; fits 800 px; German; screenshot for the README."""
    with chromium() as browser:
        browser.login(health_rig)
        browser.el("#health-pill").click()
        browser.wait(lambda: browser.text("h1") == "Mail health", what="health page")
        browser.el("#health-run").click()
        browser.wait(lambda: browser.el("#health-progress").get_attribute("data-state") == "done", timeout=90,
                     what="checks finished")
        browser.wait(lambda: "Relay login" in browser.text("#health-table"), what="findings shown")
        assert "Checks finished." in browser.text("#health-text")
        browser.driver.execute_script("document.querySelector('#health-table details').open = true")
        assert not browser.overflows()
        browser.shot("health")
        browser.viewport(800, 700)
        browser.open(health_rig, "/health/")
        assert not browser.overflows(), "the health page scrolls sideways at 800 px"
    with chromium(lang="de") as german:
        german.login(health_rig)
        german.open(health_rig, "/health/")
        assert german.text("h1") == "Mail-Check" and german.text("#health-run") == "Jetzt prüfen"


def test_findings_in_german_an_old_report_in_english_and_no_token(secrets_of_config: List[str]) -> None:
    """The German page words each finding from its key; a report stored before the keys keeps its English text.

    The round trip's reply echoes the token (as Exchange does); neither token nor password reaches the browser,
    and every POST of the page wants this session's CSRF token.
    """
    from smartpop.health import openrelay
    from smartpop.health.findings import make

    rig = Rig(sample_document())
    try:
        facts = {"params": {"smtpd_relay_restrictions": "permit_mynetworks reject_unauth_destination",
                            "mynetworks": "0.0.0.0/0"}, "services": ["smtp/inet"]}
        relay = openrelay.check_open_relay(facts, relay_enabled=True)
        assert relay is not None and relay.status == "problem"
        mx = make("mx", "firma.de", "ok", "health.msg.mx.ok", {}, domain="firma.de", host="mx00.ionos.de",
                  provider="IONOS")
        old = {"check": "dmarc", "subject": "firma.de", "status": "warning", "details": {},
               "summary": "firma.de has no DMARC record (stored by an older SmartPop)."}
        service.save_report(rig.paths, {"checked_at": "2026-12-01T08:00:00+00:00", "duration_seconds": 1.0,
                                        "status": "problem",
                                        "findings": [relay.as_dict(), mx.as_dict(), old]})
        token = "0123456789abcdef0123456789abcdef"
        now = time.time()
        (rig.paths.data / "health-state.json").write_text(json.dumps({"round_trips": [
            {"token": token, "state": "pending", "sent_at": now, "expires_at": now + 600, "to": "sammel@firma.de",
             "via": "smtp.firma.de:587", "reply": "250 2.6.0 <token> Queued", "error": ""}]}))
        german = Browserless(rig, "admin")
        german.http.headers["Accept-Language"] = "de"
        page = german.get("/health/").text
        assert "Mail für firma.de geht an mx00.ionos.de, Ihren Provider (IONOS)" in page
        assert "mynetworks vertraut 0.0.0.0/0" in page and "lets anyone" not in page and "trusts" not in page
        assert "stored by an older SmartPop" in page
        assert "Die Testnachricht wurde um" in page and "ist unterwegs" in page
        fragment = german.get("/health/fragment/findings").text
        assert "Mail für firma.de" in fragment
        api = german.get("/health/api").json()
        assert api["round_trip"]["finding"]["summary"].startswith("Die Testnachricht wurde um")
        english = Browserless(rig, "admin")
        assert "Mail for firma.de goes to mx00.ionos.de" in english.get("/health/").text

        rules = [r for r in rig.backend.app.url_map.iter_rules() if r.rule.startswith("/health/")]
        posts = [r.rule for r in rules if "POST" in (r.methods or set())]
        assert sorted(posts) == ["/health/api/round-trip", "/health/api/run"]
        other = Browserless(rig, "admin")
        for path in posts:
            for headers in ({}, {"X-SmartPop-CSRF": "0" * 64}, {"X-SmartPop-CSRF": other.csrf()}):
                assert german.post(path, headers=headers).status_code == 403, (path, headers)
        for body in german.bodies + english.bodies + other.bodies:
            assert token not in body
            for secret in secrets_of_config:
                assert secret not in body
    finally:
        rig.stop()
