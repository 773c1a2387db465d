"""Fixtures of the health tests: a local authoritative DNS server with good, broken and missing zones."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from smartpop.health.dnsquery import Resolver
from support.certs import TestCerts, make_certs
from support.dnszone import ZoneServer

# The provider: IONOS-like names (the health table knows ionos.de), addresses from TEST-NET-3.
PROVIDER = """
mx00.ionos.de.          300 IN A   203.0.113.25
smtp.ionos.de.          300 IN A   203.0.113.10
_spf-eu.ionos.com.      300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
s1.dkim.ionos.com.      300 IN TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC1"
mail.elsewhere.test.    300 IN A   198.51.100.7
"""
# good.test: MX at the provider, one SPF record with the provider's include, DKIM (CNAME, as
# IONOS publishes it), DMARC p=reject.
GOOD = """
good.test.                     300 IN MX    10 mx00.ionos.de.
good.test.                     300 IN TXT   "v=spf1 include:_spf-eu.ionos.com -all"
good.test.                     300 IN TXT   "google-site-verification=abc"
s1-ionos._domainkey.good.test. 300 IN CNAME s1.dkim.ionos.com.
_dmarc.good.test.              300 IN TXT   "v=DMARC1; p=reject; rua=mailto:postmaster@good.test"
"""
# Broken in every way a check knows, one fault per domain where faults would hide each other.
BROKEN = """
broken.test.          300 IN MX  10 mail.elsewhere.test.
broken.test.          300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.broken.test.   300 IN TXT "v=DMARC1; p=reject"
twospf.test.          300 IN MX  10 mx00.ionos.de.
twospf.test.          300 IN TXT "v=spf1 include:_spf-eu.ionos.com -all"
twospf.test.          300 IN TXT "v=spf1 ip4:198.51.100.1 -all"
plusall.test.         300 IN MX  10 mx00.ionos.de.
plusall.test.         300 IN TXT "v=spf1 include:_spf-eu.ionos.com +all"
neutral.test.         300 IN MX  10 mx00.ionos.de.
neutral.test.         300 IN TXT "v=spf1 include:_spf-eu.ionos.com ?all"
toomany.test.         300 IN MX  10 mx00.ionos.de.
i1.toomany.test.      300 IN TXT "v=spf1 a:h1.toomany.test a:h2.toomany.test -all"
i2.toomany.test.      300 IN TXT "v=spf1 a:h1.toomany.test -all"
i3.toomany.test.      300 IN TXT "v=spf1 a:h1.toomany.test -all"
i4.toomany.test.      300 IN TXT "v=spf1 a:h1.toomany.test -all"
i5.toomany.test.      300 IN TXT "v=spf1 a:h1.toomany.test -all"
i6.toomany.test.      300 IN TXT "v=spf1 a:h1.toomany.test -all"
h1.toomany.test.      300 IN A   198.51.100.11
h2.toomany.test.      300 IN A   198.51.100.12
"""


# Six includes whose a: terms add seven more look-ups: 13, over RFC 7208's limit of 10.
TOOMANY = 'toomany.test. 300 IN TXT "v=spf1 ' + " ".join(f"include:i{n}.toomany.test" for n in range(1, 7)) + ' -all"\n'


@pytest.fixture(scope="session")
def dns_server() -> Iterator[ZoneServer]:
    """The local authoritative server for all test zones (missing.test is in none: NXDOMAIN)."""
    server = ZoneServer(PROVIDER + GOOD + BROKEN + TOOMANY).start()
    yield server
    server.stop()


@pytest.fixture
def resolver(dns_server: ZoneServer) -> Resolver:
    """A resolver that asks only the local server."""
    return Resolver(["127.0.0.1"], port=dns_server.port, timeout=3.0)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    """The test CA and a server certificate for localhost."""
    return make_certs(tmp_path_factory.mktemp("health-certs"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed none of the test servers' certificates."""
    return make_certs(tmp_path_factory.mktemp("other-ca")).ca_cert
