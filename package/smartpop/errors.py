"""The one exception tree of SmartPop, split by what the caller does next.

- ConfigError: the admin must fix the configuration (CLI exit 2).
- UsageError: the command line is wrong (CLI exit 2).
- TemporaryError: retry later; mail stays on the server (CLI exit 1).
- SignInRequired: an OAuth2 account needs the admin to sign in (again) on the Accounts page.
- RollbackRequired: a system change failed half-way and must be undone.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class SmartPopError(Exception):
    """Base class of every error SmartPop raises on purpose."""


class ConfigError(SmartPopError):
    """The configuration is invalid; the message names the key and the fix.

    `code` and `params` describe the problem once more in a structured form, so the web UI can
    say it in the admin's language; str(exc) stays the English text the CLI and logs show.
    """

    def __init__(self, message: str, key: str = "", code: str = "",
                 params: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.key = key
        self.code = code
        self.params: Dict[str, Any] = dict(params or {})


class UsageError(SmartPopError):
    """The command was called wrongly."""


class TemporaryError(SmartPopError):
    """A failure that a later retry may fix (network, login, 4xx)."""


class ConnectError(TemporaryError):
    """The server could not be reached or the TLS handshake failed."""


class AuthError(TemporaryError):
    """The server refused the login."""


class ProtocolError(TemporaryError):
    """The server answered something the protocol does not allow."""


class LockBusy(TemporaryError):
    """Another process holds the lock for this resource."""


class OAuthUnavailable(TemporaryError):
    """The provider's OAuth2 endpoint could not be reached or failed for now (network, 5xx, 429)."""


class SignInRequired(SmartPopError):
    """An OAuth2 account has no usable grant: the admin must sign in (again) on the Accounts page.

    Neither temporary (retrying cannot help until someone signs in) nor a config error (the
    configuration is fine). `code` names the reason (not_signed_in, declined, expired, revoked,
    access_denied, state_mismatch, bad_paste, bad_code) so the web page can say it in the
    admin's language; str(exc) stays the English text the CLI and logs show.
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class RollbackRequired(SmartPopError):
    """A change to system files failed part-way and must be rolled back."""


class StateError(SmartPopError):
    """The persistent state is unreadable or inconsistent."""
