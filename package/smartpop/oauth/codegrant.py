"""Redeem the code of the loopback flow at the token endpoint (RFC 6749 4.1.3 with PKCE)."""

from __future__ import annotations

import time
from typing import Callable, Optional

from ..errors import SignInRequired
from .endpoint import HttpSession, post_form, raise_for_error
from .loopback import AuthRequest
from .providers import Provider
from .tokens import TokenSet, parse_token_response


def redeem(provider: Provider, request: AuthRequest, code: str, protocol: str,
           session: Optional[HttpSession] = None, clock: Callable[[], float] = time.time) -> TokenSet:
    """Exchange the pasted `code` of `request` for tokens; SignInRequired when the code is spent or wrong."""
    scope = provider.scope(protocol)
    form = {**provider.client_form(), "grant_type": "authorization_code", "code": code,
            "code_verifier": request.verifier, "redirect_uri": request.redirect_uri}
    now = clock()
    answer = post_form(session, provider.token_url, form)
    if answer.error == "invalid_grant":
        # A code is single-use and short-lived: a second paste or a slow one lands here.
        raise SignInRequired("the code was already used, has expired or belongs to another attempt: "
                             "start the sign-in again", code="bad_code")
    raise_for_error(answer)
    tokens = parse_token_response(answer.data, now, requested_scope=scope)
    if not tokens.refresh_token:
        raise SignInRequired("the provider gave no refresh token: remove SmartPop's access in your account's "
                             "security settings and sign in again", code="no_refresh_token")
    return tokens
