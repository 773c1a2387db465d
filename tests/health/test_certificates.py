"""The certificate check: days left, a warning under 14 days, a problem when verification fails."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING

from smartpop.health.checks import check_certificate
from smartpop.health.probes import CertResult, probe_certificate
from support.certs import issue_cert
from support.upstream_smtp import Upstream

if TYPE_CHECKING:  # a module-level TestCerts would make pytest try to collect it
    from support.certs import TestCerts

DAY = 86400


def probe(server_certs: TestCerts, mode: str, ca: Path) -> CertResult:
    """Start a provider in `mode` (ssl or starttls) with `server_certs`, probe its SMTP certificate trusting `ca`."""
    server = Upstream(server_certs, mode, {}).start()
    try:
        return probe_certificate("localhost", server.port, "smtp", mode, ssl.create_default_context(cafile=str(ca)),
                                 timeout=10)
    finally:
        server.stop()


def test_certificate_expiring_in_five_days_is_a_warning(certs: TestCerts, tmp_path: Path) -> None:
    """A server certificate valid for 5 more days (implicit TLS): warning with the days left."""
    soon = issue_cert(certs, tmp_path / "soon", "DNS:localhost,IP:127.0.0.1", 5)
    finding = check_certificate("localhost", probe(soon, "ssl", certs.ca_cert), time.time())
    assert finding.status == "warning", finding
    assert finding.details["days_left"] in (4, 5) and "expires in" in finding.summary


def test_long_valid_certificate_over_starttls_is_ok(certs: TestCerts) -> None:
    """SMTP STARTTLS, the ten-year test certificate: ok."""
    finding = check_certificate("localhost", probe(certs, "starttls", certs.ca_cert), time.time())
    assert finding.status == "ok", finding
    assert finding.details["days_left"] > 3000


def test_unknown_ca_is_a_problem(certs: TestCerts, other_ca: Path) -> None:
    """Verification would fail: problem."""
    assert check_certificate("localhost", probe(certs, "ssl", other_ca), time.time()).status == "problem"


def test_expired_and_unreachable() -> None:
    """Pure check: expired is a problem; a server that could not be reached is a warning (run again)."""
    now = time.time()
    expired = CertResult("h", 995, "pop3", "ssl", verified=True, not_after=now - DAY)
    assert check_certificate("h", expired, now).status == "problem"
    unreachable = CertResult("h", 995, "pop3", "ssl", error="connection to h:995 refused")
    assert check_certificate("h", unreachable, now).status == "warning"
