"""The relay login probe against local aiosmtpd providers: good login, wrong password, CA, host name, STARTTLS."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from smartpop.config.secret import Secret
from smartpop.health.checks import check_relay_login
from smartpop.health.probes import probe_relay_login
from support.certs import issue_cert
from support.upstream_smtp import Upstream
from support.wire_smtp import WireSmtp

if TYPE_CHECKING:  # a module-level TestCerts would make pytest try to collect it
    from support.certs import TestCerts

USER = "relay@good.test"
PASSWORD = "pw-Relay-Secret-42"


@pytest.fixture(params=["starttls", "ssl"])
def upstream(request: pytest.FixtureRequest, certs: TestCerts) -> Iterator[Upstream]:
    """A provider submission server in each TLS mode."""
    server = Upstream(certs, request.param, {USER: PASSWORD}).start()
    yield server
    server.stop()


def test_good_login_is_ok(upstream: Upstream, certs: TestCerts, caplog: pytest.LogCaptureFixture) -> None:
    """Verified TLS, EHLO, AUTH accepted, QUIT: ok with the server's answer; no mail sent, no password shown."""
    caplog.set_level(logging.DEBUG)
    result = probe_relay_login("localhost", upstream.port, upstream.mode, USER, Secret(PASSWORD), str(certs.ca_cert))
    finding = check_relay_login("relay", result)
    assert finding.status == "ok", finding
    assert "235" in finding.summary and result.tls_version
    assert upstream.messages == [] and upstream.auth_failures == []
    assert PASSWORD not in repr(result) + repr(finding) + caplog.text


def test_wrong_password_is_a_problem_with_the_servers_answer(upstream: Upstream, certs: TestCerts) -> None:
    """535 from the server: problem, quoting the server's answer, never the password."""
    result = probe_relay_login("localhost", upstream.port, upstream.mode, USER, Secret("pw-Wrong-999"),
                               str(certs.ca_cert))
    finding = check_relay_login("relay", result)
    assert finding.status == "problem"
    assert "535" in finding.summary and "refused the login" in finding.summary
    assert "pw-Wrong-999" not in repr(finding)
    assert upstream.auth_failures


def test_unknown_ca_is_a_problem(upstream: Upstream, other_ca: Path) -> None:
    """A certificate that does not chain to Postfix's CA bundle: problem, and no AUTH reached the server."""
    result = probe_relay_login("localhost", upstream.port, upstream.mode, USER, Secret(PASSWORD), str(other_ca))
    finding = check_relay_login("relay", result)
    assert finding.status == "problem" and "not trusted" in finding.summary, finding
    assert not result.auth_sent and upstream.auth_failures == []


def test_wrong_host_name_is_a_problem(certs: TestCerts, tmp_path: Path) -> None:
    """A certificate for another name than the relay host: problem (Postfix's 'secure' level matches the name)."""
    other = issue_cert(certs, tmp_path / "other", "DNS:smtp.other.test", 30)
    server = Upstream(other, "ssl", {USER: PASSWORD}).start()
    try:
        result = probe_relay_login("localhost", server.port, "ssl", USER, Secret(PASSWORD), str(certs.ca_cert))
    finally:
        server.stop()
    finding = check_relay_login("relay", result)
    assert finding.status == "problem" and result.verify_failed, finding
    assert "localhost" in finding.summary and not result.auth_sent


def test_stripped_starttls_is_a_problem_and_credentials_stay_home(certs: TestCerts) -> None:
    """A server (or a middlebox) that offers AUTH but no STARTTLS: problem, and the server never saw AUTH."""
    wire = WireSmtp([], smtputf8=False)
    wire.extensions.append("AUTH PLAIN LOGIN")
    wire.start()
    try:
        result = probe_relay_login("127.0.0.1", wire.port, "starttls", USER, Secret(PASSWORD), str(certs.ca_cert))
    finally:
        wire.stop()
    finding = check_relay_login("relay", result)
    assert finding.status == "problem" and "STARTTLS" in finding.summary, finding
    with wire.log.lock:
        lines = list(wire.log.lines)
    assert [line.split()[0].upper() for line in lines] == [b"EHLO", b"QUIT"]
    assert not any(PASSWORD.encode() in line for line in lines)


def test_refused_connection_is_a_problem(certs: TestCerts) -> None:
    """Nothing listening: problem naming the host and port."""
    from support.ports import free_ports

    port = free_ports(1)[0]
    finding = check_relay_login("relay", probe_relay_login("127.0.0.1", port, "ssl", USER, Secret(PASSWORD),
                                                           str(certs.ca_cert), timeout=3))
    assert finding.status == "problem" and f"127.0.0.1:{port}" in finding.summary
