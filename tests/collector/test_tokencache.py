"""collector/tokencache.py without a server: what a long-running daemon keeps of superseded tokens."""

from __future__ import annotations

import itertools
from typing import List

from smartpop import log
from smartpop.collector.tokencache import CacheKey, TokenCache
from smartpop.oauth.tokens import TokenSet

LIFETIME = 3600.0


class Rotating:
    """A token endpoint stand-in that answers every refresh with a new access and refresh token."""

    def __init__(self, clock: List[float]) -> None:
        self.clock = clock
        self.serial = itertools.count(1)
        self.issued: List[TokenSet] = []

    def __call__(self, old: TokenSet) -> TokenSet:
        n = next(self.serial)
        now = self.clock[0]
        fresh = TokenSet(access_token=f"at-{n:04d}-" + "a" * 40, expires_at=now + LIFETIME,
                         refresh_token=f"rt-{n:04d}-" + "r" * 40, obtained_at=now)
        log.register_secrets([fresh.access_token, fresh.refresh_token])  # as tokens.parse_token_answer does
        self.issued.append(fresh)
        return fresh


def registered(values: List[str]) -> List[str]:
    """Those of `values` every log line still masks."""
    return [v for v in values if log.redact_known(v) == log.REDACTED]


def test_a_year_of_hourly_rotations_keeps_two_entries_and_a_few_secrets() -> None:
    """Memory and per-line redaction work stay flat: superseded tokens are dropped and unregistered."""
    now = [1_000_000.0]
    refresher = Rotating(now)
    cache = TokenCache(clock=lambda: now[0])
    key = CacheKey("outlook", "client", "rt-0000-" + "r" * 40)
    log.register_secrets([key.refresh_token])
    for hour in range(24 * 365):
        tokens = cache.tokens(key, refresher)
        if hour % 3:  # the daemon reloads config.json (with the rotated token) most of the time, not always
            key = key._replace(refresh_token=tokens.refresh_token)
        now[0] += LIFETIME
    assert len(refresher.issued) == 24 * 365
    assert len(cache._entries) <= 2
    every = [key.refresh_token] + [v for t in refresher.issued for v in (t.access_token, t.refresh_token)]
    still = registered(every)
    assert len(still) <= 4, still
    latest = refresher.issued[-1]
    # What is in use is still masked: the newest tokens and the refresh token config.json names.
    assert {latest.access_token, latest.refresh_token, key.refresh_token} <= set(still)


def test_a_caller_with_the_previous_refresh_token_still_gets_the_fresh_tokens() -> None:
    """Until config.json is reloaded, the old key must find the new tokens, not refresh with a spent token."""
    now = [1_000_000.0]
    refresher = Rotating(now)
    cache = TokenCache(clock=lambda: now[0])
    old = CacheKey("outlook", "client", "rt-start-" + "r" * 40)
    first = cache.tokens(old, refresher)
    assert cache.tokens(old, refresher) is first
    assert cache.tokens(old._replace(refresh_token=first.refresh_token), refresher) is first
    assert len(refresher.issued) == 1


def test_another_accounts_entries_are_left_alone() -> None:
    now = [1_000_000.0]
    refresher = Rotating(now)
    cache = TokenCache(clock=lambda: now[0])
    other = cache.tokens(CacheKey("gmail", "g-client", "rt-gmail-" + "r" * 40), refresher)
    key = CacheKey("outlook", "client", "rt-o-" + "r" * 40)
    for _ in range(5):
        key = key._replace(refresh_token=cache.tokens(key, refresher).refresh_token)
        now[0] += LIFETIME
    assert cache.peek(CacheKey("gmail", "g-client", "rt-gmail-" + "r" * 40)) is other
    assert registered([other.access_token, other.refresh_token]) == [other.access_token, other.refresh_token]
