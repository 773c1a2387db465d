"""Refresh an access token with the stored refresh token (RFC 6749 section 6)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from ..errors import SignInRequired
from .endpoint import HttpSession, post_form, raise_for_error
from .providers import Provider
from .tokens import TokenSet, parse_token_response

log = logging.getLogger(__name__)


def refresh(provider: Provider, tokens: TokenSet, protocol: str, session: Optional[HttpSession] = None,
            clock: Callable[[], float] = time.time) -> TokenSet:
    """A new TokenSet for `tokens`; SignInRequired when the grant is gone, OAuthUnavailable to retry later.

    When the answer carries a new refresh token (Microsoft may rotate it), the caller must store
    it in place of the old one: compare `refresh_token` before and after.
    """
    if not tokens.refresh_token:
        raise SignInRequired("not signed in yet: sign in on the Accounts page", code="not_signed_in")
    # Microsoft's v2 endpoint wants the scope again; Google accepts it.
    scope = provider.scope(protocol)
    form = {**provider.client_form(), "grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
            "scope": scope}
    now = clock()
    answer = post_form(session, provider.token_url, form)
    raise_for_error(answer)
    fresh = parse_token_response(answer.data, now, requested_scope=scope, previous=tokens)
    log.debug("access token refreshed for %s (refresh token %s)", provider.kind,
              "rotated" if fresh.refresh_token != tokens.refresh_token else "kept")
    return fresh
