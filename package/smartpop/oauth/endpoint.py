"""One POST to a provider's OAuth2 endpoint, and what its error answers mean for the caller.

The device, refresh and code-grant modules share this, so they agree on which answers mean
"sign in again" (SignInRequired), "the app registration is wrong" (ConfigError) and "retry
later" (OAuthUnavailable / ProtocolError). `requests` is imported on first use: most SmartPop
processes never talk OAuth2.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Mapping, Optional, Protocol

from ..errors import ConfigError, OAuthUnavailable, ProtocolError, SignInRequired
from ..log import escape_controls, redact

log = logging.getLogger(__name__)

TIMEOUT = 30
BODY_MAX = 65536
DETAIL_MAX = 300

# RFC 6749 5.2 and Microsoft's device flow: errors that only the admin's app registration fixes.
CONFIG_ERRORS = ("invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type",
                 "invalid_request")
TEMPORARY_ERRORS = ("temporarily_unavailable", "server_error")


class HttpSession(Protocol):
    """What SmartPop uses of a requests.Session, so tests can pass their own."""

    def post(self, url: str, data: Optional[Any] = None, json: Optional[Any] = None, *,
             headers: Optional[Any] = None, timeout: Optional[Any] = None, allow_redirects: bool = True) -> Any:
        """Send a POST and return a response with status_code and content."""


def default_session() -> HttpSession:
    """A requests.Session (imported only now)."""
    import requests

    return requests.Session()


class Answer:
    """A token endpoint's answer: the HTTP status and its JSON object (empty when it was none)."""

    def __init__(self, status: int, data: Dict[str, Any]) -> None:
        self.status = status
        self.data = data

    @property
    def error(self) -> str:
        """The OAuth2 `error` code, "" when the answer is a success."""
        value = self.data.get("error", "")
        return value if isinstance(value, str) else ""

    def detail(self) -> str:
        """The provider's error description on one bounded, redacted line (Microsoft's carry AADSTS codes)."""
        raw = self.data.get("error_description", "")
        text = escape_controls(redact(raw if isinstance(raw, str) else str(raw)))
        return text if len(text) <= DETAIL_MAX else text[:DETAIL_MAX] + "..."

    def describe(self) -> str:
        """The error code and description as one line for a message."""
        detail = self.detail()
        code = escape_controls(self.error)[:60] or f"HTTP {self.status}"
        return f"{code}: {detail}" if detail else code


def post_form(session: Optional[HttpSession], url: str, form: Mapping[str, str]) -> Answer:
    """POST `form` to `url`; OAuthUnavailable for network trouble, 5xx or 429, ProtocolError for non-JSON."""
    import requests

    http = session if session is not None else default_session()
    try:
        # No redirects: a token endpoint that redirects is not one to resend the form to.
        response = http.post(url, data=dict(form), timeout=TIMEOUT, allow_redirects=False,
                             headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        # The exception text can quote the request; name only its class.
        raise OAuthUnavailable(f"the sign-in service could not be reached ({type(exc).__name__})") from None
    status = int(response.status_code)
    if status >= 500 or status == 429:
        raise OAuthUnavailable(f"the sign-in service answered HTTP {status}; trying again later")
    body = response.content[:BODY_MAX + 1]
    try:
        data = json.loads(body.decode("utf-8")) if len(body) <= BODY_MAX else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProtocolError(f"the sign-in service answered HTTP {status} without a JSON object")
    answer = Answer(status, data)
    log.debug("%s: HTTP %d %s", url, status, escape_controls(answer.error)[:60] or "ok")
    return answer


def raise_for_error(answer: Answer, field_key: str = "oauth.client_id") -> None:
    """Raise what an error answer means for the caller; return quietly for a success."""
    if 200 <= answer.status < 300 and not answer.error:
        return
    error = answer.error
    if error == "invalid_grant":
        raise SignInRequired(f"the sign-in is no longer valid ({answer.describe()}): sign in again on the "
                             "Accounts page", code="revoked")
    if error in ("access_denied", "authorization_declined"):
        raise SignInRequired("the sign-in was declined at the provider", code="declined")
    if error == "expired_token":
        raise SignInRequired("the sign-in code expired before it was used: start the sign-in again",
                             code="expired")
    if error in CONFIG_ERRORS:
        raise ConfigError(f"{field_key}: the provider refused the app registration ({answer.describe()})",
                          key=field_key, code="oauth_app", params={"error": escape_controls(error)[:60]})
    if error in TEMPORARY_ERRORS:
        raise OAuthUnavailable(f"the sign-in service is unavailable ({answer.describe()}); trying again later")
    raise ProtocolError(f"the sign-in service refused the request ({answer.describe()})")

