"""transport.tls_for: the one place POP3 and IMAP get their TLS context from."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from smartpop.collector import transport
from smartpop.errors import ConnectError


def _verifies(context: ssl.SSLContext) -> bool:
    return (context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
            and context.minimum_version >= ssl.TLSVersion.TLSv1_2)


def test_ssl_verifies_at_connect_and_never_upgrades() -> None:
    tls = transport.tls_for("ssl", None)
    assert tls.on_connect is not None and tls.upgrade is None
    assert _verifies(tls.on_connect)


def test_starttls_verifies_after_the_upgrade_command() -> None:
    tls = transport.tls_for("starttls", None)
    assert tls.on_connect is None and tls.upgrade is not None
    assert _verifies(tls.upgrade)


def test_none_is_plain_text_and_reads_no_ca_file(tmp_path: Path) -> None:
    # The ca_file is not even looked at: an unreadable one cannot fail a plain-text account.
    assert transport.tls_for("none", str(tmp_path / "missing.pem")) == transport.Tls(None, None)


def test_both_modes_share_the_cached_context() -> None:
    assert transport.tls_for("ssl", None).on_connect is transport.tls_for("starttls", None).upgrade


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_an_unreadable_ca_file_is_a_connect_error(security: str, tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="cannot read ca_file"):
        transport.tls_for(security, str(tmp_path / "missing.pem"))
