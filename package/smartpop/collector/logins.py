"""Which credential an account logs in with right now (issue 18: OAuth2 accounts get a token).

A stub until the OAuth2 wiring lands: every account logs in with its password.
"""

from __future__ import annotations

from smartpop.collector.credential import Credential, password_credential
from smartpop.config.schema import Account
from smartpop.paths import Paths


def credential_for(paths: Paths, account: Account) -> Credential:
    """The credential to log in to `account` with; raises SignInRequired for an OAuth2 account without a grant."""
    del paths  # the OAuth2 grant store lives under paths (issue 18)
    return password_credential(account)
