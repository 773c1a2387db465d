"""The local OAuth2 server for the tests of smartpop.oauth, and providers pointed at it."""

from __future__ import annotations

from typing import Iterator

import pytest

from smartpop.oauth.providers import Provider, provider_from_config
from support.oauthserver import CLIENT_ID, CLIENT_SECRET, OAuthServer


@pytest.fixture
def server() -> Iterator[OAuthServer]:
    """A Microsoft-style server: public client, no secret."""
    srv = OAuthServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def gserver() -> Iterator[OAuthServer]:
    """A Google-style server: the client must send its secret."""
    srv = OAuthServer(client_secret=CLIENT_SECRET).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def ms(server: OAuthServer) -> Provider:
    """A Microsoft provider whose endpoints are the local server's."""
    return provider_from_config({"provider": "microsoft", "client_id": CLIENT_ID}, endpoint_base=server.base)


@pytest.fixture
def gg(gserver: OAuthServer) -> Provider:
    """A Google provider whose endpoints are the local server's."""
    return provider_from_config({"provider": "google", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                                endpoint_base=gserver.base)

