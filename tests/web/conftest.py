"""Fixtures for the UI tests: the rig (stand-in DSM + CGI host + backend) and DSM sessions."""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest
from webrig import Browserless, Rig

from support.samples import sample_document


@pytest.fixture
def rig() -> Iterator[Rig]:
    """A fresh rig with the sample config."""
    environment = Rig(sample_document())
    yield environment
    environment.stop()


@pytest.fixture
def admin(rig: Rig) -> Browserless:
    """An administrator's DSM session."""
    return Browserless(rig, "admin")


@pytest.fixture
def secrets_of_config() -> List[str]:
    """The passwords of sample_document (must never reach a browser)."""
    doc = sample_document()
    return [doc["accounts"][0]["password"], doc["relay"]["password"]]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile (skips without Debian's chromium and chromium-driver)."""
    # Imported here: selenium is loaded only by the tests that drive a browser.
    from support.browser import chromium

    with chromium() as instance:
        yield instance
