"""Storing an OAuth2 account's refresh token in config.json (the grant, kept like a password).

The sign-in pages store the token they obtained; the collector stores the one a refresh
rotated in (Microsoft). Both go through store.update: the config lock, a fresh read (so an
edit made meanwhile in the web UI is kept), validation and an atomic 0600 write.
"""

from __future__ import annotations

import logging

from smartpop.config import store
from smartpop.config import validators as v
from smartpop.config.schema import Config
from smartpop.config.secret import Secret
from smartpop.paths import Paths

log = logging.getLogger(__name__)


def _set(paths: Paths, account_name: str, token: str) -> None:
    # Checked before the lock: a token with a line break or space could forge config content.
    clean = v.as_token("oauth.refresh_token", token)

    def change(config: Config) -> None:
        index, account = next(((i, a) for i, a in enumerate(config.accounts) if a.name == account_name),
                              (-1, None))
        if account is None:
            config.account(account_name)  # raises the ConfigError naming the known accounts
            return
        if account.auth != "oauth2" or account.oauth is None:
            raise v.fail(f"accounts[{index}].auth", f"account {account_name!r} does not sign in with OAuth2",
                         f"set accounts[{index}].auth to 'oauth2' first", code="not_oauth2", name=account_name)
        account.oauth.refresh_token = Secret(clean)

    store.update(paths, change)


def save_refresh_token(paths: Paths, account_name: str, token: str) -> None:
    """Store `token` as the refresh token of OAuth2 account `account_name` (ConfigError if gone or not OAuth2)."""
    if not token:
        raise v.fail("oauth.refresh_token", "is empty", "sign in again", code="empty")
    _set(paths, account_name, token)
    log.info("stored the OAuth2 grant of account %s", account_name)


def forget_refresh_token(paths: Paths, account_name: str) -> None:
    """Remove the stored refresh token of OAuth2 account `account_name` (it then needs a new sign-in)."""
    _set(paths, account_name, "")
    log.info("forgot the OAuth2 grant of account %s", account_name)
