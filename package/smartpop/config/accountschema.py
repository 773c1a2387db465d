"""The account records of config.json: a mailbox to collect from and how it logs in.

Pure logic, no I/O; schema.py re-exports everything here, so `smartpop.config.schema.Account`
stays the name callers use. An account logs in with its password (`"auth": "password"`, the
default, and what every config written before issue 18 means) or with an OAuth2 access token
(`"auth": "oauth2"` plus an `oauth` block naming the admin's app registration; docs/OAUTH2.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Literal, Optional, Tuple, get_args

from smartpop.config import validators as v
from smartpop.config.records import absent, check_keys, reader
from smartpop.config.secret import Secret

Protocol = Literal["pop3", "imap"]
Security = Literal["ssl", "starttls", "none"]
Mode = Literal["multidrop", "single"]
Auth = Literal["password", "oauth2"]
OAuthKind = Literal["microsoft", "google"]

PROTOCOLS: List[Protocol] = list(get_args(Protocol))
SECURITIES: List[Security] = list(get_args(Security))
MODES: List[Mode] = list(get_args(Mode))
AUTHS: List[Auth] = list(get_args(Auth))
OAUTH_KINDS: List[OAuthKind] = list(get_args(OAuthKind))
DEFAULT_TENANT = "common"

DEFAULT_PORTS: Dict[Tuple[Protocol, Security], int] = {
    ("pop3", "ssl"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110,
    ("imap", "ssl"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
}


@dataclass
class OAuthSettings:
    """The admin's own app registration at the provider, and the grant SmartPop got with it.

    `refresh_token` empty: valid config, not signed in yet (docs/OAUTH2.md).
    """

    provider: OAuthKind
    client_id: str
    tenant: str = DEFAULT_TENANT  # Microsoft only
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    refresh_token: Secret = field(default_factory=lambda: Secret(""))


@dataclass
class Account:
    """One provider mailbox that SmartPop collects from."""

    name: str
    protocol: Protocol = field(metadata=absent("pop3"))
    host: str
    port: int
    security: Security = field(metadata=absent("ssl"))
    username: str
    password: Secret
    enabled: bool = True
    allow_insecure: bool = False
    ca_file: Optional[str] = None
    mode: Mode = "multidrop"
    deliver_to: Optional[str] = None
    keep_on_server: bool = False
    delete_after_days: Optional[int] = None
    interval: int = 60
    idle: bool = False
    folder: str = "INBOX"
    auth: Auth = "password"
    oauth: Optional[OAuthSettings] = None

    def secrets(self) -> List[str]:
        """This account's clear-text secrets (password, OAuth2 client secret and refresh token)."""
        found = [self.password.reveal()]
        if self.oauth is not None:
            found += [self.oauth.client_secret.reveal(), self.oauth.refresh_token.reveal()]
        return [s for s in found if s]


def parse_oauth(key: str, raw: Any) -> OAuthSettings:
    """Validate an account's `oauth` block (`key` is its path, e.g. accounts[0].oauth)."""
    data = check_keys(key, raw, [f.name for f in fields(OAuthSettings)], ["provider", "client_id"])
    get = reader(data, OAuthSettings)
    kind = v.as_choice(f"{key}.provider", data["provider"], OAUTH_KINDS)
    tenant = get("tenant")
    secret = v.as_token(f"{key}.client_secret", data.get("client_secret") or "")
    if kind == "google" and not secret:
        raise v.fail(f"{key}.client_secret", "is required for Google",
                     f"copy the client secret of your Google desktop app client into {key}.client_secret",
                     code="client_secret_required")
    return OAuthSettings(
        provider=kind,
        client_id=v.as_client_id(f"{key}.client_id", data["client_id"]),
        tenant=DEFAULT_TENANT if tenant in (None, "") else v.as_tenant(f"{key}.tenant", tenant),
        client_secret=Secret(secret),
        refresh_token=Secret(v.as_token(f"{key}.refresh_token", data.get("refresh_token") or "")),
    )


def _parse_login(key: str, data: Any) -> Tuple[Auth, Optional[OAuthSettings]]:
    """The `auth` choice and the `oauth` block, which must come together."""
    auth = v.as_choice(f"{key}.auth", reader(data, Account)("auth"), AUTHS)
    raw = data.get("oauth")
    if auth == "oauth2" and raw is None:
        raise v.fail(f"{key}.oauth", "is required when auth is 'oauth2'",
                     f"add {key}.oauth with provider and client_id of your app registration", code="oauth_required")
    if auth == "password" and raw is not None:
        raise v.fail(f"{key}.oauth", "is only used when auth is 'oauth2'",
                     f"remove {key}.oauth or set {key}.auth to 'oauth2'", code="oauth_without_oauth2")
    return auth, None if raw is None else parse_oauth(f"{key}.oauth", raw)


def parse_account(key: str, raw: Any) -> Account:
    """Validate one entry of `accounts` (`key` is its path, e.g. accounts[0])."""
    data = check_keys(key, raw, [f.name for f in fields(Account)], ["name", "host", "username"])
    get = reader(data, Account)
    protocol = v.as_choice(f"{key}.protocol", get("protocol"), PROTOCOLS)
    security = v.as_choice(f"{key}.security", get("security"), SECURITIES)
    allow_insecure = v.as_bool(f"{key}.allow_insecure", get("allow_insecure"))
    if security == "none" and not allow_insecure:
        raise v.fail(f"{key}.security", "'none' sends the password unencrypted",
                     f"use ssl or starttls, or set {key}.allow_insecure to true if you accept that",
                     code="insecure_needs_consent")
    port = data.get("port")
    mode = v.as_choice(f"{key}.mode", get("mode"), MODES)
    deliver_to = v.as_optional(f"{key}.deliver_to", get("deliver_to"), v.as_address)
    if mode == "single" and deliver_to is None:
        raise v.fail(f"{key}.deliver_to", "is required when mode is 'single'",
                     f"set {key}.deliver_to to the local mailbox, e.g. anna@firma.de",
                     code="deliver_to_required")
    idle = v.as_bool(f"{key}.idle", get("idle"))
    if idle and protocol != "imap":
        raise v.fail(f"{key}.idle", "IDLE push works only with IMAP", f"set {key}.idle to false or use imap",
                     code="idle_needs_imap")
    auth, oauth = _parse_login(key, data)
    return Account(
        name=v.as_name(f"{key}.name", data["name"]),
        enabled=v.as_bool(f"{key}.enabled", get("enabled")),
        protocol=protocol,
        host=v.as_hostname(f"{key}.host", data["host"]),
        port=DEFAULT_PORTS[(protocol, security)] if port in (None, "") else v.as_port(f"{key}.port", port),
        security=security,
        allow_insecure=allow_insecure,
        username=v.as_text(f"{key}.username", data["username"], max_len=320),
        password=Secret(v.as_secret_text(f"{key}.password", data.get("password", ""))),
        ca_file=v.as_optional(f"{key}.ca_file", get("ca_file"), v.as_path),
        mode=mode,
        deliver_to=deliver_to,
        keep_on_server=v.as_bool(f"{key}.keep_on_server", get("keep_on_server")),
        delete_after_days=v.as_optional(f"{key}.delete_after_days", get("delete_after_days"),
                                        lambda k, x: v.as_int(k, x, 1, 3650)),
        interval=v.as_int(f"{key}.interval", get("interval"), 10, 86400),
        idle=idle,
        folder=v.as_text(f"{key}.folder", get("folder"), max_len=200),
        auth=auth,
        oauth=oauth,
    )


def trim_account(document: Dict[str, Any]) -> Dict[str, Any]:
    """Leave the login keys out of a rendered account where they say the default.

    A password account is written as before issue 18, so configs do not change on the next save;
    an oauth block keeps refresh_token always (save/forget change only its value).
    """
    if document.get("auth") == "password":
        document.pop("auth")
    oauth = document.get("oauth")
    if oauth is None:
        document.pop("oauth", None)
        return document
    if oauth.get("provider") != "microsoft":
        oauth.pop("tenant", None)
    if not oauth.get("client_secret"):
        oauth.pop("client_secret", None)
    return document
