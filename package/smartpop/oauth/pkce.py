"""PKCE (RFC 7636) and the `state` value of an authorization request; pure apart from the OS's randomness."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

METHOD = "S256"
# RFC 7636 4.1: 43 to 128 characters of this alphabet.
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    """A fresh code verifier: 32 random bytes, base64url without padding (43 characters)."""
    return _b64url(secrets.token_bytes(32))


def challenge(verifier: str) -> str:
    """The S256 code challenge of `verifier`: base64url(sha256(verifier)) without padding."""
    if not _VERIFIER.match(verifier):
        raise ValueError("a PKCE code verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~")
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_state() -> str:
    """A fresh, unguessable `state` that ties a pasted redirect to the request this page made."""
    return secrets.token_urlsafe(24)
