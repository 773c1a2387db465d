"""Google's installed-app flow with a loopback redirect, as a paste-back: pure, no I/O.

The page opens the provider's sign-in address in the admin's browser; after consent the
provider redirects to http://127.0.0.1/ on the admin's own computer, where nothing answers, so
the browser shows an error page with the code in its address bar. The admin pastes that
address (or the code alone) into the page. PKCE makes the code useless without the verifier
that only SmartPop holds, so whatever might listen on that loopback port gets nothing usable;
`state` ties the pasted address to the request this page made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from ..errors import SignInRequired
from ..log import escape_controls
from . import pkce
from .providers import Provider

DEFAULT_REDIRECT = "http://127.0.0.1/"
PASTE_MAX = 4096
# Google's codes look like "4/0AeaY...": URL-safe characters and slashes.
_CODE = re.compile(r"^[A-Za-z0-9/_.~+-]{8,2048}$")


@dataclass(frozen=True)
class AuthRequest:
    """One sign-in attempt: the address to open and what the paste-back is checked against."""

    url: str
    redirect_uri: str
    state: str = field(repr=False)
    verifier: str = field(repr=False)


def auth_url(provider: Provider, protocol: str, redirect_uri: str, state: str, code_challenge: str) -> str:
    """The provider's sign-in address for a code grant with PKCE and offline access."""
    query = {
        "response_type": "code", "client_id": provider.client_id, "redirect_uri": redirect_uri,
        "scope": provider.scope(protocol), "code_challenge": code_challenge,
        "code_challenge_method": pkce.METHOD, "state": state,
        # offline + consent: Google hands out a refresh token only then, also on a second sign-in.
        "access_type": "offline", "prompt": "consent",
    }
    return f"{provider.auth_url}?{urlencode(query)}"


def start(provider: Provider, protocol: str, redirect_uri: str = DEFAULT_REDIRECT) -> AuthRequest:
    """A new sign-in attempt with a fresh state and PKCE verifier."""
    state, verifier = pkce.new_state(), pkce.new_verifier()
    url = auth_url(provider, protocol, redirect_uri, state, pkce.challenge(verifier))
    return AuthRequest(url=url, redirect_uri=redirect_uri, state=state, verifier=verifier)


def _shown(text: str, limit: int = 120) -> str:
    text = escape_controls(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _first(params: Dict[str, List[str]], key: str) -> str:
    values = params.get(key) or [""]
    return values[0]


def parse_pasted(text: str, expected_state: str) -> str:
    """The authorization code in what the admin pasted: the redirected address or the bare code.

    Raises SignInRequired (code access_denied, provider_error, state_mismatch or bad_paste) with
    a message that tells the admin what went wrong.
    """
    text = text.strip()
    if not text:
        raise SignInRequired("nothing was pasted: paste the address your browser shows after signing in",
                             code="bad_paste")
    if len(text) > PASTE_MAX:
        raise SignInRequired("the pasted text is too long to be the redirected address", code="bad_paste")
    if "://" not in text and "?" not in text and "=" not in text:
        code = unquote(text)
        if not _CODE.match(code):
            raise SignInRequired("the pasted text is neither the redirected address nor a code", code="bad_paste")
        # A bare code carries no state; PKCE still binds it to this attempt's verifier.
        return code
    if "://" in text:
        parts = urlsplit(text)
        query = parts.query or parts.fragment
    else:
        # The address without its scheme, or only its query: what follows the "?" if there is one.
        query = text.split("?", 1)[1] if "?" in text else text
    params = parse_qs(query, keep_blank_values=True)
    if "client_id" in params and "code" not in params and "error" not in params:
        raise SignInRequired("that is the sign-in address itself: open it, sign in, and paste the address "
                              "the browser shows at the end", code="bad_paste")
    error = _first(params, "error")
    if error:
        detail = _first(params, "error_description")
        if error == "access_denied":
            raise SignInRequired("the sign-in was cancelled or consent was refused at the provider",
                                 code="access_denied")
        raise SignInRequired(f"the provider refused the sign-in: {_shown(error, 60)}"
                             + (f" ({_shown(detail)})" if detail else ""), code="provider_error")
    code = _first(params, "code")
    if not code:
        raise SignInRequired("the pasted address holds no code: paste the address the browser shows after "
                             "the last sign-in step", code="bad_paste")
    if _first(params, "state") != expected_state:
        raise SignInRequired("the pasted address belongs to another sign-in attempt: start again and paste "
                             "the address of this one", code="state_mismatch")
    if not _CODE.match(code):
        raise SignInRequired("the code in the pasted address is malformed", code="bad_paste")
    return code
