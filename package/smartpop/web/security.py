"""Who is asking: the CGI's proof, the DSM user and session it vouches for, CSRF tokens, dev mode."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Collection, Optional

from flask import Request

from smartpop.web.proof import PROOF_HEADER

USER_HEADER = "X-SmartPop-User"
SESSION_HEADER = "X-SmartPop-Session"
BASE_HEADER = "X-SmartPop-Base"
# DSM's CSRF token of this request, as the CGI passed it on: every URL the app renders carries
# it, so links, forms, scripts and styles reach authenticate.cgi with it (index.cgi).
DSM_CSRF_HEADER = "X-SmartPop-SynoToken"
CSRF_HEADER = "X-SmartPop-CSRF"
CSRF_FIELD = "csrf_token"
DEV_COOKIE = "smartpop_dev"
DEV_USER = "dev"

# The CGI passes the script path it was called under; anything else is not used in URLs.
_SAFE_BASE = re.compile(r"^(/[A-Za-z0-9._-]+)*$")
_SAFE_USER = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_SAFE_SYNO_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,256}$")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the DSM user and a digest of their DSM session."""

    user: str
    session: str
    syno_token: str = ""


def equal(given: str, expected: str) -> bool:
    """Constant-time comparison that never accepts an empty value."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def identify(request: Request, secret: str, dev_sessions: Optional[Collection[str]] = None) -> Optional[Caller]:
    """Return the caller when the request carries the CGI's proof (or a dev session cookie); else None."""
    if equal(request.headers.get(PROOF_HEADER, ""), secret):
        user = request.headers.get(USER_HEADER, "")
        if not _SAFE_USER.match(user):
            return None
        token = request.headers.get(DSM_CSRF_HEADER, "")
        return Caller(user=user, session=request.headers.get(SESSION_HEADER, ""),
                      syno_token=token if _SAFE_SYNO_TOKEN.match(token) else "")
    cookie = request.cookies.get(DEV_COOKIE, "")
    for session in dev_sessions or ():
        if equal(cookie, session):
            return Caller(user=DEV_USER, session=hashlib.sha256(session.encode()).hexdigest()[:32])
    return None


def csrf_token(secret: str, caller: Caller) -> str:
    """The CSRF token of this DSM user in this DSM session (derived, so nothing is stored)."""
    message = f"csrf\n{caller.user}\n{caller.session}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def csrf_ok(request: Request, secret: str, caller: Caller) -> bool:
    """Whether a state-changing request carries this caller's CSRF token."""
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    return equal(given, csrf_token(secret, caller))


def safe_base(value: str) -> str:
    """The URL prefix the CGI reported, or '' if it looks wrong."""
    value = value.rstrip("/")
    return value if _SAFE_BASE.match(value) else ""
