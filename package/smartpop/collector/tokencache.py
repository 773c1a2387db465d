"""Access tokens of OAuth2 accounts, kept in memory and refreshed before they expire.

Process-wide and thread-safe: the daemon's account threads and an IDLE re-login ask at once,
and one refresh must serve them all (a second one could spend a rotated refresh token). An
entry is keyed by account name, client id and the stored refresh token, so a new sign-in or a
changed app registration never reuses an old access token. Nothing here is written to disk.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, NamedTuple, Optional, Set

from smartpop.log import forget_secrets
from smartpop.oauth.tokens import REFRESH_MARGIN, TokenSet, stored


class CacheKey(NamedTuple):
    """What an access token belongs to; the refresh token part is never shown."""

    account: str
    client_id: str
    refresh_token: str

    def __repr__(self) -> str:
        return f"CacheKey({self.account!r}, {self.client_id!r}, <redacted>)"


Refresher = Callable[[TokenSet], TokenSet]


def usable_until(tokens: TokenSet, margin: float = REFRESH_MARGIN) -> float:
    """The time from which `tokens` counts as due (TokenSet.needs_refresh's rule), for Credential.expires_at."""
    lifetime = tokens.expires_at - tokens.obtained_at
    return tokens.expires_at - (min(margin, lifetime / 2) if lifetime > 0 else margin)


class TokenCache:
    """TokenSets by CacheKey; `tokens()` refreshes when due, one refresh per key at a time."""

    def __init__(self, clock: Callable[[], float] = time.time, margin: float = REFRESH_MARGIN) -> None:
        self.clock = clock
        self.margin = margin
        self._guard = threading.Lock()
        self._entries: Dict[CacheKey, TokenSet] = {}
        self._locks: Dict[str, threading.Lock] = {}

    def _lock_of(self, account: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(account, threading.Lock())

    def peek(self, key: CacheKey) -> Optional[TokenSet]:
        """The cached TokenSet for `key`, fresh or not (None: none)."""
        with self._guard:
            return self._entries.get(key)

    def tokens(self, key: CacheKey, refresh: Refresher) -> TokenSet:
        """A TokenSet for `key` that is not due; `refresh(old)` runs only when needed, once per account.

        A rotated refresh token is filed under its own key too, so the next caller finds the
        entry whether or not config.json already holds the new token.
        """
        with self._lock_of(key.account):
            current = self.peek(key) or stored(key.refresh_token)
            if not current.needs_refresh(self.clock(), self.margin):
                return current
            fresh = refresh(current)
            rotated = key._replace(refresh_token=fresh.refresh_token)
            with self._guard:
                superseded = self._supersede(key, rotated, current)
                self._entries[key] = fresh
                self._entries[rotated] = fresh
            forget_secrets(superseded - {fresh.access_token, fresh.refresh_token, key.refresh_token})
            return fresh

    def _supersede(self, key: CacheKey, rotated: CacheKey, current: TokenSet) -> Set[str]:
        """Drop the account's entries other than `key` and `rotated`; the token values they held.

        Without this, a daemon whose provider rotates the refresh token (Microsoft) would keep
        one entry and two registered secrets more every hour, for ever. `key` itself stays: a
        caller whose config.json still names the previous refresh token finds the fresh tokens
        under it until the next refresh, two rotations on.
        """
        gone = {current.access_token}
        for stale in [k for k in self._entries if k.account == key.account and k not in (key, rotated)]:
            tokens = self._entries.pop(stale)
            gone.update((stale.refresh_token, tokens.access_token, tokens.refresh_token))
        return gone

    def forget(self, account: str) -> None:
        """Drop every entry of `account` (after a revoked grant or a sign-out)."""
        with self._guard:
            for key in [k for k in self._entries if k.account == account]:
                del self._entries[key]
