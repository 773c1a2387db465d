"""Which credential an account logs in with right now: its password, or an OAuth2 access token.

For an OAuth2 account the access token comes from the process-wide TokenCache, refreshed from
the refresh token in config.json when due. A refresh that rotates the refresh token (Microsoft)
is stored at once; if that write fails the new access token is still used and the error logged:
Microsoft keeps the previous refresh token valid for a while, so the next process can still
refresh with what config.json holds (docs/OAUTH2.md).
"""

from __future__ import annotations

import logging
from typing import Optional

from smartpop.collector.credential import Credential, password_credential
from smartpop.collector.tokencache import CacheKey, TokenCache, usable_until
from smartpop.config import grants
from smartpop.config.schema import Account, OAuthSettings
from smartpop.config.secret import Secret
from smartpop.errors import SignInRequired, SmartPopError
from smartpop.oauth.providers import Provider, endpoint_base_from_env, provider_from_config
from smartpop.oauth.refresh import refresh
from smartpop.oauth.tokens import TokenSet
from smartpop.paths import Paths

log = logging.getLogger(__name__)

NOT_SIGNED_IN = "not signed in yet: sign in on the Accounts page"

CACHE = TokenCache()


def provider_of(oauth: OAuthSettings) -> Provider:
    """The Provider of an account's `oauth` block (endpoints moved only by SMARTPOP_OAUTH_TEST_BASE)."""
    block = {"provider": oauth.provider, "client_id": oauth.client_id, "tenant": oauth.tenant,
             "client_secret": oauth.client_secret.reveal()}
    return provider_from_config(block, endpoint_base=endpoint_base_from_env())


def _persist(paths: Paths, account: Account, old: TokenSet, fresh: TokenSet) -> None:
    if fresh.refresh_token == old.refresh_token:
        return
    try:
        grants.save_refresh_token(paths, account.name, fresh.refresh_token)
    except (SmartPopError, OSError) as exc:
        log.error("%s: could not store the rotated OAuth2 refresh token (%s); using the new access token anyway",
                  account.name, exc)


def oauth_credential(paths: Paths, account: Account, cache: TokenCache) -> Credential:
    """An XOAUTH2 credential for OAuth2 account `account` from `cache`, refreshing (and storing a rotation)."""
    oauth = account.oauth
    if oauth is None or not oauth.refresh_token:
        raise SignInRequired(NOT_SIGNED_IN, code="not_signed_in")
    provider = provider_of(oauth)

    def renew(old: TokenSet) -> TokenSet:
        fresh = refresh(provider, old, account.protocol, clock=cache.clock)
        _persist(paths, account, old, fresh)
        return fresh

    key = CacheKey(account.name, oauth.client_id, oauth.refresh_token.reveal())
    try:
        tokens = cache.tokens(key, renew)
    except SignInRequired:
        cache.forget(account.name)
        raise
    return Credential("xoauth2", account.username, Secret(tokens.access_token),
                      expires_at=usable_until(tokens, cache.margin))


def credential_for(paths: Paths, account: Account, cache: Optional[TokenCache] = None) -> Credential:
    """The credential to log in to `account` with; raises SignInRequired for an OAuth2 account without a grant."""
    if account.auth == "oauth2":
        return oauth_credential(paths, account, CACHE if cache is None else cache)
    return password_credential(account)
