"""What a mailbox login presents: a password, or an OAuth2 access token for SASL XOAUTH2.

The protocol modules only see a `Credential`; where it comes from (the config's password, or
a token refreshed from the stored OAuth2 grant) is decided before connecting, so pop3.py and
imap.py know nothing of token endpoints.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

from smartpop.config.schema import Account
from smartpop.config.secret import Secret

Mechanism = Literal["password", "xoauth2"]


class Credential(NamedTuple):
    """One login: the mechanism, the user name, and the password or access token.

    `expires_at` is the wall-clock time (time.time()) from which the server may refuse the
    token, already shortened by the refresh margin; a session that outlives it (IMAP IDLE)
    must log in again with a fresh credential. None: a password, valid until changed.
    """

    mechanism: Mechanism
    username: str
    secret: Secret
    expires_at: Optional[float] = None

    def __repr__(self) -> str:
        return f"Credential({self.mechanism!r}, {self.username!r}, {self.secret!r}, expires_at={self.expires_at!r})"


def password_credential(account: Account) -> Credential:
    """The account's user name and stored password (the default login)."""
    return Credential("password", account.username, account.password)
