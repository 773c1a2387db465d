"""Fixtures for the collector tests: one Dovecot+Postfix stack per session, a fresh env per test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.collect import CORPUS_DOMAIN, Env
from support.mailstack import MailStack, have_mail_servers


@pytest.fixture(scope="session")
def stack() -> Iterator[MailStack]:
    """The provider (Dovecot) and MailPlus stand-in (Postfix), shared by the session."""
    if not have_mail_servers():
        pytest.skip("needs root plus dovecot-core dovecot-pop3d dovecot-imapd postfix openssl")
    mail = MailStack.start(domains=("firma.test", "provider.test", CORPUS_DOMAIN))
    yield mail
    mail.stop()


@pytest.fixture
def env(stack: MailStack, tmp_path: Path) -> Iterator[Env]:
    """A fresh Env on the shared stack."""
    environment = Env(stack, tmp_path)
    yield environment
    environment.cleanup()


