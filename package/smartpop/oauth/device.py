"""Microsoft's device-code flow (RFC 8628): start it, then poll the token endpoint until done.

The page shows the user code and the verification address; the admin signs in there on any
device, and SmartPop polls at the interval the provider asked for. The web page can drive
`poll_once` from its own requests; `poll_until_done` does the waiting itself. Clock and sleep are
parameters so tests run without waiting.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ..errors import ProtocolError, SignInRequired
from ..log import escape_controls, register_secrets
from .endpoint import HttpSession, post_form, raise_for_error
from .providers import DEVICE, Provider
from .tokens import TokenSet, parse_token_response

log = logging.getLogger(__name__)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5  # RFC 8628 3.2, when the provider names none
SLOW_DOWN_STEP = 5  # RFC 8628 3.5: every slow_down adds five seconds
MAX_INTERVAL = 60
DEFAULT_LIFETIME = 900

PENDING = "pending"
SLOW_DOWN = "slow_down"
DONE = "done"

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class DeviceCode:
    """A started device sign-in: what the page shows, and what polling needs."""

    user_code: str
    verification_uri: str
    expires_at: float
    interval: int
    message: str
    scope: str
    device_code: str = field(repr=False)


@dataclass(frozen=True)
class Poll:
    """One poll's outcome: PENDING or SLOW_DOWN (keep polling at `device.interval`) or DONE with tokens."""

    status: str
    device: DeviceCode
    tokens: Optional[TokenSet] = None


def _text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ProtocolError(f"device authorization: {name} is missing or malformed")
    return escape_controls(value)


def _seconds(value: object, default: int, low: int, high: int) -> int:
    number = default
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = int(float(value))
        except ValueError:
            pass
    return max(low, min(high, number))


def start(provider: Provider, protocol: str, session: Optional[HttpSession] = None,
          clock: Clock = time.time) -> DeviceCode:
    """Ask the provider for a device code and user code for mail access over `protocol`."""
    if provider.flow != DEVICE:
        raise ProtocolError(f"{provider.kind} does not sign in with a device code")
    scope = provider.scope(protocol)
    now = clock()
    answer = post_form(session, provider.device_url, {**provider.client_form(), "scope": scope})
    raise_for_error(answer)
    data = answer.data
    uri = _text(data.get("verification_uri") or data.get("verification_url"), "verification_uri", 2048)
    if not uri.startswith(("https://", "http://")):
        raise ProtocolError("device authorization: the verification address is not a web address")
    device_code = data.get("device_code")
    if not isinstance(device_code, str) or not device_code or len(device_code) > 8192:
        raise ProtocolError("device authorization: device_code is missing or malformed")
    register_secrets([device_code])
    message = data.get("message")
    return DeviceCode(
        user_code=_text(data.get("user_code"), "user_code", 64), verification_uri=uri,
        expires_at=now + _seconds(data.get("expires_in"), DEFAULT_LIFETIME, 60, 3600),
        interval=_seconds(data.get("interval"), DEFAULT_INTERVAL, 1, MAX_INTERVAL),
        message=escape_controls(message)[:500] if isinstance(message, str) else "",
        scope=scope, device_code=device_code,
    )


def poll_once(provider: Provider, device: DeviceCode, session: Optional[HttpSession] = None,
              clock: Clock = time.time) -> Poll:
    """Ask the token endpoint once whether the admin has signed in; SignInRequired when it is over."""
    now = clock()
    if now >= device.expires_at:
        raise SignInRequired("the sign-in code expired before the sign-in finished: start again", code="expired")
    form = {**provider.client_form(), "grant_type": GRANT_TYPE, "device_code": device.device_code}
    answer = post_form(session, provider.token_url, form)
    if answer.error == "authorization_pending":
        return Poll(PENDING, device)
    if answer.error == "slow_down":
        slower = replace(device, interval=min(MAX_INTERVAL, device.interval + SLOW_DOWN_STEP))
        return Poll(SLOW_DOWN, slower)
    if answer.error == "bad_verification_code":
        raise SignInRequired("the provider does not know this sign-in code: start again", code="bad_code")
    raise_for_error(answer)
    return Poll(DONE, device, parse_token_response(answer.data, now, requested_scope=device.scope))


def poll_until_done(provider: Provider, device: DeviceCode, session: Optional[HttpSession] = None,
                    clock: Clock = time.time, sleep: Sleep = time.sleep) -> TokenSet:
    """Poll at the provider's interval (slower after each slow_down) until tokens or a final error."""
    while True:
        sleep(device.interval)
        poll = poll_once(provider, device, session, clock)
        if poll.tokens is not None:
            log.info("device sign-in for %s finished", provider.kind)
            return poll.tokens
        device = poll.device
