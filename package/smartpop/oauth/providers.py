"""The OAuth2 providers SmartPop signs in to: endpoints, scopes and flow per kind; pure, no I/O.

An account's `oauth` block names the kind and the admin's own app registration (client_id,
Microsoft's tenant, Google's client secret); `provider_from_config` turns it into a `Provider`
that the flow and token modules take. Endpoints are fixed per kind; only the tests move them to
a local server, through the `endpoint_base` keyword argument, which is deliberately not a
config key so that no config.json can send a refresh token elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Set, Tuple

from ..errors import ConfigError
from ..log import escape_controls, register_secrets

log = logging.getLogger(__name__)

KINDS = ("microsoft", "google")
PROTOCOLS = ("pop3", "imap")
DEVICE = "device"
LOOPBACK = "loopback"
DEFAULT_TENANT = "common"

MICROSOFT_HOST = "https://login.microsoftonline.com"
MS_POP3_SCOPE = "https://outlook.office.com/POP.AccessAsUser.All"
MS_IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
# Without offline_access Microsoft hands out no refresh token, and every hour would need a sign-in.
MS_OFFLINE_SCOPE = "offline_access"
GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (an address, not a secret)
GOOGLE_MAIL_SCOPE = "https://mail.google.com/"

# A tenant is a name (common, organizations, consumers), a GUID or a domain; it goes into a URL
# path, so nothing that could add a path segment, a query or another host passes.
_TENANT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# Client ids are a GUID (Microsoft) or `<digits>-<id>.apps.googleusercontent.com` (Google).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,256}$")


# The test rigs' way to point a subprocess at tests/support/oauthserver.py. Loopback only, so
# that no environment can send a refresh token off the machine.
TEST_BASE_ENV = "SMARTPOP_OAUTH_TEST_BASE"
_LOOPBACK_BASE = re.compile(r"^http://(?:127\.0\.0\.1|\[::1\]):[1-9][0-9]{0,4}/?\Z")
_warned: Set[str] = set()


@dataclass(frozen=True)
class Provider:
    """One app registration at one provider: where its endpoints are and what it asks for."""

    kind: str
    flow: str  # DEVICE (Microsoft) or LOOPBACK (Google)
    client_id: str
    token_url: str
    device_url: str  # "" when the flow is LOOPBACK
    auth_url: str  # "" when the flow is DEVICE
    scopes: Tuple[Tuple[str, str], ...]  # (protocol, space-separated scope) pairs
    needs_secret: bool
    client_secret: str = field(default="", repr=False)
    tenant: str = ""

    def scope(self, protocol: str) -> str:
        """The space-separated scope to request for mail access over `protocol` (pop3 or imap)."""
        for name, value in self.scopes:
            if name == protocol:
                return value
        raise ConfigError(f"OAuth2 has no scope for protocol {protocol!r}", key="protocol",
                          code="oauth_protocol", params={"protocol": protocol})

    def client_form(self) -> Dict[str, str]:
        """The client's credentials as token endpoint form fields (the secret only where needed)."""
        form = {"client_id": self.client_id}
        if self.needs_secret:
            form["client_secret"] = self.client_secret
        return form


def microsoft(client_id: str, tenant: str = DEFAULT_TENANT, endpoint_base: str = "") -> Provider:
    """A Microsoft identity platform app (public client, device-code flow) in `tenant`."""
    base = (endpoint_base or MICROSOFT_HOST).rstrip("/")
    root = f"{base}/{tenant}/oauth2/v2.0"
    return Provider(
        kind="microsoft", flow=DEVICE, client_id=client_id, token_url=f"{root}/token",
        device_url=f"{root}/devicecode", auth_url="",
        scopes=(("pop3", f"{MS_POP3_SCOPE} {MS_OFFLINE_SCOPE}"), ("imap", f"{MS_IMAP_SCOPE} {MS_OFFLINE_SCOPE}")),
        needs_secret=False, tenant=tenant,
    )


def google(client_id: str, client_secret: str, endpoint_base: str = "") -> Provider:
    """A Google "desktop app" client (installed-app flow with a loopback redirect and PKCE)."""
    if endpoint_base:
        base = endpoint_base.rstrip("/")
        auth_url, token_url = f"{base}/o/oauth2/v2/auth", f"{base}/token"
    else:
        auth_url, token_url = GOOGLE_AUTH_URL, GOOGLE_TOKEN_URL
    # Google issues desktop clients a secret it documents as not secret, and still demands it.
    return Provider(
        kind="google", flow=LOOPBACK, client_id=client_id, token_url=token_url, device_url="",
        auth_url=auth_url, scopes=(("pop3", GOOGLE_MAIL_SCOPE), ("imap", GOOGLE_MAIL_SCOPE)),
        needs_secret=True, client_secret=client_secret,
    )


def _text(oauth: Mapping[str, Any], key: str) -> str:
    value = oauth.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"oauth.{key}: must be a string", key=f"oauth.{key}", code="oauth_type",
                          params={"key": key})
    return value.strip()


def provider_from_config(oauth: Mapping[str, Any], *, endpoint_base: str = "") -> Provider:
    """The Provider an account's `oauth` block describes; ConfigError names the key to fix.

    `endpoint_base` (e.g. "http://127.0.0.1:8123") replaces the provider's host; tests only.
    """
    kind = _text(oauth, "provider")
    if kind not in KINDS:
        raise ConfigError(f"oauth.provider: must be one of {', '.join(KINDS)}", key="oauth.provider",
                          code="oauth_provider", params={"value": kind})
    client_id = _text(oauth, "client_id")
    if not _CLIENT_ID.match(client_id):
        raise ConfigError("oauth.client_id: the application (client) id of your app registration is missing "
                          "or malformed", key="oauth.client_id", code="oauth_client_id")
    if kind == "microsoft":
        tenant = _text(oauth, "tenant") or DEFAULT_TENANT
        if not _TENANT.match(tenant):
            raise ConfigError("oauth.tenant: must be common, organizations, consumers, a tenant id or a domain",
                              key="oauth.tenant", code="oauth_tenant")
        return microsoft(client_id, tenant, endpoint_base)
    secret = _text(oauth, "client_secret")
    if not secret:
        raise ConfigError("oauth.client_secret: Google needs the client secret of your desktop app client",
                          key="oauth.client_secret", code="oauth_client_secret")
    register_secrets([secret])
    return google(client_id, secret, endpoint_base)


def endpoint_base_from_env() -> str:
    """$SMARTPOP_OAUTH_TEST_BASE when it is an http://127.0.0.1:PORT or http://[::1]:PORT URL, else ""."""
    value = os.environ.get(TEST_BASE_ENV, "")
    if not value:
        return ""
    if _LOOPBACK_BASE.match(value) and int(value.rstrip("/").rsplit(":", 1)[1]) <= 65535:
        return value.rstrip("/")
    if value not in _warned:
        _warned.add(value)
        log.warning("%s=%s ignored: only http://127.0.0.1:PORT or http://[::1]:PORT is allowed", TEST_BASE_ENV,
                    escape_controls(value)[:100])
    return ""
