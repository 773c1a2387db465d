"""The Accounts page's OAuth2 sign-in, as services the views call: start, poll, paste back, forget.

What a started sign-in needs later (Microsoft's device_code, Google's PKCE verifier and state)
stays in this process, in a short-lived store keyed by a random id that is bound to the admin's
DSM session; the browser only ever sees the id, the user code and the addresses to open. A
finished sign-in's refresh token goes straight to the config store (config.grants) and nowhere
else. The grant is bound to the app registration and server it was made for: when the account's
oauth settings changed while the admin was signing in, the token is not stored.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from smartpop.config import grants
from smartpop.errors import ConfigError, SignInRequired
from smartpop.oauth import codegrant, device, loopback
from smartpop.oauth.providers import DEVICE, Provider, endpoint_base_from_env, provider_from_config
from smartpop.paths import Paths

log = logging.getLogger(__name__)

# A paste-back attempt has no provider-given lifetime; Google's codes live minutes, this is ample.
PASTE_LIFETIME = 1800
MAX_PENDING = 64  # per process: enough for any admin, bounded against a script that keeps starting

# What the Accounts list shows per OAuth2 account.
SIGNED_IN = "signed_in"
NOT_SIGNED_IN = "not_signed_in"
SIGN_IN_AGAIN = "sign_in_again"
# The one line SignInRequired("... sign in again ...", code="revoked") leaves as the account's last error.
_REVOKED_MARK = "sign in again"
# SignInRequired codes with a text of their own ("signin.error.<code>"); any other says "failed".
CODES = ("not_signed_in", "revoked", "declined", "expired", "bad_code", "access_denied", "state_mismatch",
         "bad_paste", "no_refresh_token", "provider_error", "changed", "unavailable", "app")
# What of an account a grant is bound to: another app registration or server gets none of it.
BINDING = ("provider", "client_id", "tenant")
SERVER = ("protocol", "host", "port", "security", "username")

Clock = Callable[[], float]


@dataclass
class Pending:
    """One started sign-in, server-side only."""

    owner: str
    account: str
    binding: Tuple[Any, ...]
    expires_at: float
    code: Optional[device.DeviceCode] = field(default=None, repr=False)
    request: Optional[loopback.AuthRequest] = field(default=None, repr=False)


class PendingStore:
    """Started sign-ins by random id; an entry is only found again by the session that started it."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._items: Dict[str, Pending] = {}

    def add(self, pending: Pending) -> str:
        """Keep `pending` until it expires; its new id."""
        with self._lock:
            self._purge()
            mine = [k for k, v in self._items.items() if v.owner == pending.owner and v.account == pending.account]
            for key in mine:  # a new start replaces the same admin's earlier attempt for this account
                del self._items[key]
            while len(self._items) >= MAX_PENDING:
                del self._items[min(self._items, key=lambda k: self._items[k].expires_at)]
            key = secrets.token_urlsafe(18)
            self._items[key] = pending
            return key

    def get(self, key: str, owner: str, account: str) -> Optional[Pending]:
        """The attempt `key` if `owner` started it for `account` and it has not expired."""
        with self._lock:
            self._purge()
            pending = self._items.get(key)
            if pending is None or not secrets.compare_digest(pending.owner, owner) or pending.account != account:
                return None
            return pending

    def update(self, key: str, pending: Pending) -> None:
        """Replace the attempt `key` (e.g. a slower polling interval)."""
        with self._lock:
            if key in self._items:
                self._items[key] = pending

    def drop(self, key: str) -> None:
        """Forget the attempt `key`."""
        with self._lock:
            self._items.pop(key, None)

    def _purge(self) -> None:
        now = self.clock()
        for key in [k for k, v in self._items.items() if v.expires_at <= now]:
            del self._items[key]


@dataclass(frozen=True)
class Outcome:
    """What a poll or a paste came to: "pending", "done", or "failed" with the SignInRequired code."""

    state: str
    interval: int = 0
    code: str = ""
    detail: str = ""


def oauth_block(account: Dict[str, Any]) -> Dict[str, Any]:
    """The account document's oauth block ({} when it has none)."""
    block = account.get("oauth")
    return block if isinstance(block, dict) else {}


def binding_of(account: Dict[str, Any]) -> Tuple[Any, ...]:
    """What a grant of `account` is bound to: its app registration and its server and user."""
    oauth = oauth_block(account)
    return tuple(oauth.get(k) or "" for k in BINDING) + tuple(account.get(k) for k in SERVER)


def provider_of(account: Dict[str, Any]) -> Provider:
    """The Provider of an OAuth2 account document; ConfigError when its oauth block is unusable."""
    if account.get("auth") != "oauth2":
        raise ConfigError("auth: this account signs in with a password", key="auth", code="oauth_not_oauth2")
    return provider_from_config(oauth_block(account), endpoint_base=endpoint_base_from_env())


def state_of(account: Dict[str, Any], last_error: Optional[str]) -> str:
    """The sign-in badge of an OAuth2 account: signed in, not signed in yet, or sign in again."""
    if not oauth_block(account).get("refresh_token"):
        return NOT_SIGNED_IN
    if last_error and _REVOKED_MARK in last_error:
        return SIGN_IN_AGAIN
    return SIGNED_IN


def start(store: PendingStore, account: Dict[str, Any], owner: str) -> Tuple[str, Pending]:
    """Start a sign-in for `account`: the device flow (Microsoft) or a paste-back request (Google)."""
    provider = provider_of(account)
    protocol = str(account.get("protocol") or "pop3")
    pending = Pending(owner=owner, account=str(account["name"]), binding=binding_of(account), expires_at=0.0)
    if provider.flow == DEVICE:
        pending.code = device.start(provider, protocol, clock=store.clock)
        pending.expires_at = pending.code.expires_at
    else:
        pending.request = loopback.start(provider, protocol)
        pending.expires_at = store.clock() + PASTE_LIFETIME
    key = store.add(pending)
    log.info("sign-in for account %s started (%s)", pending.account, provider.kind)
    return key, pending


def _save(paths: Paths, account: Dict[str, Any], pending: Pending, refresh_token: str) -> None:
    if binding_of(account) != pending.binding:
        # The app registration or server changed meanwhile: this grant belongs to the old one.
        raise SignInRequired("the account's settings changed during the sign-in: start again", code="changed")
    grants.save_refresh_token(paths, pending.account, refresh_token)
    log.info("account %s signed in", pending.account)


def poll(store: PendingStore, paths: Paths, account: Dict[str, Any], key: str, owner: str) -> Outcome:
    """Ask the provider once whether the admin finished the device sign-in; store the grant when so."""
    pending = store.get(key, owner, str(account["name"]))
    if pending is None or pending.code is None:
        return Outcome("failed", code="expired")
    try:
        result = device.poll_once(provider_of(account), pending.code, clock=store.clock)
        if result.tokens is None:
            pending.code = result.device
            store.update(key, pending)
            return Outcome("pending", interval=result.device.interval)
        _save(paths, account, pending, result.tokens.refresh_token)
    except SignInRequired as exc:
        store.drop(key)
        return Outcome("failed", code=exc.code, detail=str(exc))
    store.drop(key)
    return Outcome("done")


def finish_paste(store: PendingStore, paths: Paths, account: Dict[str, Any], key: str, owner: str,
                 pasted: str) -> Outcome:
    """Redeem the pasted redirect address (or code) of a paste-back sign-in and store the grant."""
    pending = store.get(key, owner, str(account["name"]))
    if pending is None or pending.request is None:
        return Outcome("failed", code="expired")
    try:
        code = loopback.parse_pasted(pasted, pending.request.state)
    except SignInRequired as exc:
        # A wrong paste may be followed by the right one: the attempt stays.
        return Outcome("failed", code=exc.code, detail=str(exc))
    try:
        tokens = codegrant.redeem(provider_of(account), pending.request, code, str(account.get("protocol") or "pop3"))
        _save(paths, account, pending, tokens.refresh_token)
    except SignInRequired as exc:
        store.drop(key)  # a code is single-use: this attempt is spent
        return Outcome("failed", code=exc.code, detail=str(exc))
    store.drop(key)
    return Outcome("done")


def forget(paths: Paths, name: str) -> None:
    """Remove the stored grant of account `name` (it has to sign in again before the next fetch)."""
    grants.forget_refresh_token(paths, name)
    log.info("grant of account %s forgotten", name)
