"""Token sets: what a token endpoint answered, with an absolute expiry; pure, no I/O.

Where tokens live: the refresh token is stored like a password (the config store, 0600,
redacted); the access token only ever in memory, in a TokenSet, and is refreshed before it
expires. The expiry comes from `expires_in`, counted from the local clock at the moment the
request went out, so the provider's clock never matters; the refresh margin covers the time
the answer took and a resource server whose clock runs ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from ..errors import ProtocolError
from ..log import escape_controls, register_secrets

# Refresh this long before the expiry the provider gave.
REFRESH_MARGIN = 300
# An answer without expires_in: RFC 6749 leaves the lifetime to the provider; both kinds
# SmartPop knows give an hour, so assume that rather than refreshing before every login.
DEFAULT_LIFETIME = 3600
# A longer lifetime is a broken answer; capping it keeps a bogus one from pinning a token.
MAX_LIFETIME = 86400
TOKEN_MAX = 16384
BEARER = "Bearer"


@dataclass(frozen=True)
class TokenSet:
    """An access token with its absolute expiry, the refresh token and the scope granted."""

    access_token: str = field(repr=False)
    expires_at: float
    refresh_token: str = field(repr=False)
    scope: Tuple[str, ...] = ()
    token_type: str = BEARER
    obtained_at: float = 0.0

    def __repr__(self) -> str:
        return (f"TokenSet(access_token={'<redacted>' if self.access_token else '<none>'}, "
                f"refresh_token={'<redacted>' if self.refresh_token else '<none>'}, "
                f"expires_at={self.expires_at:.0f}, scope={' '.join(self.scope)!r})")

    __str__ = __repr__

    def needs_refresh(self, now: float, margin: float = REFRESH_MARGIN) -> bool:
        """Whether the access token is missing, expired or within `margin` seconds of its expiry."""
        if not self.access_token:
            return True
        lifetime = self.expires_at - self.obtained_at
        # A token shorter-lived than twice the margin would be "due" at once, every time: a
        # refresh loop. Such a token is refreshed at half its life instead.
        effective = min(margin, lifetime / 2) if lifetime > 0 else margin
        return now >= self.expires_at - effective

    def has_scope(self, scope: str) -> bool:
        """Whether every space-separated scope in `scope` was granted (case-insensitive)."""
        granted = {s.casefold() for s in self.scope}
        return all(s.casefold() in granted for s in scope.split())

    def missing_scope(self, scope: str) -> Tuple[str, ...]:
        """The scopes of `scope` that the grant lacks, for an error that names them."""
        granted = {s.casefold() for s in self.scope}
        return tuple(s for s in scope.split() if s.casefold() not in granted)


def stored(refresh_token: str, scope: str = "") -> TokenSet:
    """A TokenSet from the stored refresh token alone: due for a refresh at once."""
    register_secrets([refresh_token])
    return TokenSet(access_token="", expires_at=0.0, refresh_token=refresh_token, scope=tuple(scope.split()))


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > TOKEN_MAX:
        raise ProtocolError(f"token endpoint: {key} is not a string of sane length")
    return value


def _lifetime(data: Mapping[str, Any]) -> float:
    raw = data.get("expires_in")
    if raw is None:
        return DEFAULT_LIFETIME
    try:
        # Some providers (Microsoft's v1 endpoints) send the number as a string.
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ProtocolError(f"token endpoint: expires_in is not a number: {escape_controls(str(raw))[:40]}") from None
    if math.isnan(seconds) or seconds <= 0:
        raise ProtocolError("token endpoint: expires_in is not positive")
    return min(seconds, MAX_LIFETIME)


def parse_token_response(data: Mapping[str, Any], now: float, requested_scope: str = "",
                         previous: Optional[TokenSet] = None) -> TokenSet:
    """The TokenSet of a successful token endpoint answer; `now` is when the request went out.

    A refresh answer without a refresh token keeps `previous`'s (Google does not rotate; Microsoft
    may, and then the new one must replace the stored one); without a scope the grant is what was
    requested (RFC 6749 5.1), else `previous`'s.
    """
    access = _string(data, "access_token")
    if not access:
        raise ProtocolError("token endpoint: the answer holds no access token")
    token_type = _string(data, "token_type") or BEARER
    if token_type.casefold() != "bearer":
        raise ProtocolError(f"token endpoint: token type {escape_controls(token_type)[:40]!r} is not Bearer")
    refresh = _string(data, "refresh_token") or (previous.refresh_token if previous else "")
    scope_text = _string(data, "scope") or requested_scope or (" ".join(previous.scope) if previous else "")
    register_secrets([access, refresh])
    return TokenSet(access_token=access, expires_at=now + _lifetime(data), refresh_token=refresh,
                    scope=tuple(scope_text.split()), token_type=BEARER, obtained_at=now)
