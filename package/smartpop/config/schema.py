"""The config.json schema: typed records, parsing with key-naming errors, and rendering.

Pure logic, no I/O. `parse_config(dict)` validates a (migrated) document and returns a
`Config`; `render_config(Config)` gives the JSON-ready dict back (with secrets).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Literal, Optional, get_args

from smartpop.config import validators as v
from smartpop.config.accountschema import (
    AUTHS,
    DEFAULT_PORTS,
    DEFAULT_TENANT,
    MODES,
    OAUTH_KINDS,
    PROTOCOLS,
    SECURITIES,
    Account,
    Auth,
    Mode,
    OAuthKind,
    OAuthSettings,
    Protocol,
    Security,
    parse_account,
    trim_account,
)
from smartpop.config.records import Parser, default_of, defaults
from smartpop.config.records import absent as _absent
from smartpop.config.records import check_keys as _check_keys
from smartpop.config.records import reader as _reader
from smartpop.config.secret import Secret

SCHEMA_VERSION = 1

# The account records live in accountschema.py; callers keep importing them from here.
__all__ = [
    "AUTHS",
    "DEFAULT_PORTS",
    "DEFAULT_TENANT",
    "MODES",
    "OAUTH_KINDS",
    "PROTOCOLS",
    "RELAY_DEFAULT_PORTS",
    "RELAY_SECURITIES",
    "RELAY_SECURITY",
    "SCHEMA_VERSION",
    "SECURITIES",
    "Account",
    "Alerts",
    "Auth",
    "Config",
    "Delivery",
    "Mode",
    "OAuthKind",
    "OAuthSettings",
    "Protocol",
    "Relay",
    "RelaySecurity",
    "Security",
    "SenderRelay",
    "Trail",
    "Web",
    "default_of",
    "defaults",
    "parse_config",
    "render_config",
]

RelaySecurity = Literal["ssl", "starttls"]

RELAY_SECURITIES: List[RelaySecurity] = list(get_args(RelaySecurity))

RELAY_DEFAULT_PORTS: Dict[RelaySecurity, int] = {"ssl": 465, "starttls": 587}
# The provider submission most offer; the main relay and each sender relay start from it.
RELAY_SECURITY: RelaySecurity = "starttls"


@dataclass
class Delivery:
    """Where collected mail is handed over (MailPlus's Postfix)."""

    host: str = "127.0.0.1"
    port: int = 25


@dataclass
class SenderRelay:
    """A relay used for one sender address or '@domain'."""

    sender: str
    host: str
    port: int
    security: RelaySecurity = field(metadata=_absent(RELAY_SECURITY))
    username: str
    password: Secret


@dataclass
class Relay:
    """Outgoing mail through the provider's submission server."""

    enabled: bool = False
    host: Optional[str] = None
    port: int = RELAY_DEFAULT_PORTS[RELAY_SECURITY]
    security: RelaySecurity = RELAY_SECURITY
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    sender_relays: List[SenderRelay] = field(default_factory=list)


@dataclass
class Web:
    """The web backend (bound to 127.0.0.1 only)."""

    port: int = 8765


@dataclass
class Alerts:
    """How the admin hears about trouble without opening the app (see smartpop.alerts)."""

    failing_minutes: int = 30
    email_to: Optional[str] = None
    webhook_url: Secret = field(default_factory=lambda: Secret(""))
    dsm_notify: bool = True
    repeat_minutes: int = 60


@dataclass
class Trail:
    """The mail trail (docs/TRAIL.md): what is kept about each message, and for how long."""

    subjects: bool = False  # off by default: a subject is often personal data
    retention_days: int = 30


@dataclass
class Config:
    """The whole validated config.json."""

    accounts: List[Account] = field(default_factory=list)
    local_domains: List[str] = field(default_factory=list)
    aliases: Dict[str, List[str]] = field(default_factory=dict)
    fallback_recipient: Optional[str] = None
    delivery: Delivery = field(default_factory=Delivery)
    relay: Relay = field(default_factory=Relay)
    web: Web = field(default_factory=Web)
    alerts: Alerts = field(default_factory=Alerts)
    trail: Trail = field(default_factory=Trail)
    schema_version: int = SCHEMA_VERSION

    def account(self, name: str) -> Account:
        """Return the account called `name` or raise ConfigError."""
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none configured"
        raise v.fail("accounts", f"there is no account named {name!r}", f"use one of: {known}",
                     code="no_such_account", name=name)

    def secrets(self) -> List[str]:
        """Every clear-text secret in the config (for redaction checks)."""
        found = [s for a in self.accounts for s in a.secrets()] + [self.relay.password.reveal()]
        found += [s.password.reveal() for s in self.relay.sender_relays]
        found.append(self.alerts.webhook_url.reveal())
        return [s for s in found if s]


def _parse_sender_relay(key: str, raw: Any) -> SenderRelay:
    names = [f.name for f in fields(SenderRelay)]
    data = _check_keys(key, raw, names, ["sender", "host", "username"])
    security = v.as_choice(f"{key}.security", _reader(data, SenderRelay)("security"), RELAY_SECURITIES)
    port = data.get("port")
    return SenderRelay(
        sender=v.as_sender_pattern(f"{key}.sender", data["sender"]),
        host=v.as_hostname(f"{key}.host", data["host"]),
        port=RELAY_DEFAULT_PORTS[security] if port in (None, "") else v.as_port(f"{key}.port", port),
        security=security,
        username=v.as_text(f"{key}.username", data["username"], max_len=320),
        password=Secret(v.as_secret_text(f"{key}.password", data.get("password", ""))),
    )


def _parse_relay(key: str, raw: Any) -> Relay:
    names = [f.name for f in fields(Relay)]
    data = _check_keys(key, raw, names, [])
    get = _reader(data, Relay)
    enabled = v.as_bool(f"{key}.enabled", get("enabled"))
    security = v.as_choice(f"{key}.security", get("security"), RELAY_SECURITIES)
    host = v.as_optional(f"{key}.host", get("host"), v.as_hostname)
    if enabled and host is None:
        raise v.fail(f"{key}.host", "is required when the relay is enabled",
                     f"set {key}.host to the provider's SMTP server or set {key}.enabled to false",
                     code="relay_host_required")
    port = data.get("port")
    raw_relays = data.get("sender_relays", [])
    if not isinstance(raw_relays, list):
        raise v.fail(f"{key}.sender_relays", "must be a list", f"make {key}.sender_relays a [...] list",
                     code="not_a_list")
    relays = [_parse_sender_relay(f"{key}.sender_relays[{i}]", item) for i, item in enumerate(raw_relays)]
    seen = set()
    for i, relay in enumerate(relays):
        if relay.sender in seen:
            raise v.fail(f"{key}.sender_relays[{i}].sender", f"{relay.sender} is listed twice",
                         "keep one entry per sender", code="sender_twice", sender=relay.sender)
        seen.add(relay.sender)
    return Relay(
        enabled=enabled,
        host=host,
        port=RELAY_DEFAULT_PORTS[security] if port in (None, "") else v.as_port(f"{key}.port", port),
        security=security,
        username=v.as_text(f"{key}.username", get("username"), max_len=320, allow_empty=True),
        password=Secret(v.as_secret_text(f"{key}.password", data.get("password", ""))),
        sender_relays=relays,
    )


def _parse_aliases(key: str, raw: Any) -> Dict[str, List[str]]:
    if not isinstance(raw, dict):
        raise v.fail(key, "must be an object of address -> [addresses]",
                     f'write {key} like {{"info@firma.de": ["anna@firma.de"]}}', code="aliases_not_an_object")
    result: Dict[str, List[str]] = {}
    for alias, raw_targets in raw.items():
        alias_key = f"{key}[{alias!r}]"
        address = v.as_address(alias_key, alias).lower()
        targets = [raw_targets] if isinstance(raw_targets, str) else raw_targets
        if not isinstance(targets, list) or not targets:
            raise v.fail(alias_key, "must list at least one target address", f"give {alias_key} a [...] of addresses",
                         code="alias_without_targets", alias=address)
        result[address] = [v.as_address(f"{alias_key}[{i}]", t) for i, t in enumerate(targets)]
    return result


def _parse_alerts(key: str, raw: Any) -> Alerts:
    names = [f.name for f in fields(Alerts)]
    data = _check_keys(key, raw, names, [])
    get = _reader(data, Alerts)
    webhook = v.as_secret_text(f"{key}.webhook_url", data.get("webhook_url") or "")
    # The URL usually carries a token (e.g. Synology Chat), so it is kept like a password.
    if webhook and not webhook.lower().startswith(("https://", "http://")):
        raise v.fail(f"{key}.webhook_url", "is not an http(s) URL",
                     f"set {key}.webhook_url to a URL starting with https://, or leave it empty",
                     code="not_a_web_url")
    return Alerts(
        failing_minutes=v.as_int(f"{key}.failing_minutes", get("failing_minutes"), 5, 10080),
        email_to=v.as_optional(f"{key}.email_to", get("email_to"), v.as_address),
        webhook_url=Secret(webhook),
        dsm_notify=v.as_bool(f"{key}.dsm_notify", get("dsm_notify")),
        repeat_minutes=v.as_int(f"{key}.repeat_minutes", get("repeat_minutes"), 1, 10080),
    )


def _parse_trail(key: str, raw: Any) -> Trail:
    data = _check_keys(key, raw, [f.name for f in fields(Trail)], [])
    get = _reader(data, Trail)
    return Trail(
        subjects=v.as_bool(f"{key}.subjects", get("subjects")),
        retention_days=v.as_int(f"{key}.retention_days", get("retention_days"), 1, 3650),
    )


def _parse_list(key: str, raw: Any, item: Parser) -> List[Any]:
    if not isinstance(raw, list):
        raise v.fail(key, "must be a list", f"make {key} a [...] list", code="not_a_list")
    return [item(f"{key}[{i}]", x) for i, x in enumerate(raw)]


def parse_config(raw: Any) -> Config:
    """Validate a migrated config document; raise ConfigError naming the first bad key."""
    top = [f.name for f in fields(Config)]
    data = _check_keys("", raw, top, [])
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise v.fail("schema_version", f"is {version!r}, this SmartPop understands {SCHEMA_VERSION}",
                     "upgrade SmartPop, or restore a config written by this version",
                     code="unknown_schema_version", version=repr(version), supported=SCHEMA_VERSION)
    accounts = _parse_list("accounts", data.get("accounts", []), parse_account)
    names = set()
    for i, account in enumerate(accounts):
        if account.name in names:
            raise v.fail(f"accounts[{i}].name", f"{account.name!r} is used twice", "give every account its own name",
                         code="name_taken", value=account.name)
        names.add(account.name)
    delivery = _reader(_check_keys("delivery", data.get("delivery", {}), [f.name for f in fields(Delivery)], []),
                       Delivery)
    web = _reader(_check_keys("web", data.get("web", {}), [f.name for f in fields(Web)], []), Web)
    config = Config(
        accounts=accounts,
        local_domains=[d.lower() for d in _parse_list("local_domains", data.get("local_domains", []), v.as_domain)],
        aliases=_parse_aliases("aliases", data.get("aliases", {})),
        fallback_recipient=v.as_optional("fallback_recipient", data.get("fallback_recipient"), v.as_address),
        delivery=Delivery(
            host=v.as_hostname("delivery.host", delivery("host")),
            port=v.as_port("delivery.port", delivery("port")),
        ),
        relay=_parse_relay("relay", data.get("relay", {})),
        web=Web(port=v.as_int("web.port", web("port"), 1025, 65535)),
        alerts=_parse_alerts("alerts", data.get("alerts", {})),
        # Absent in configs written before the trail existed: the defaults apply.
        trail=_parse_trail("trail", data.get("trail", {})),
    )
    if any(a.mode == "multidrop" for a in accounts):
        if not config.local_domains:
            raise v.fail("local_domains", "is empty but a multidrop account needs it",
                         "list the company's mail domains, e.g. [\"firma.de\"]", code="local_domains_needed")
        if config.fallback_recipient is None:
            raise v.fail("fallback_recipient", "is missing but a multidrop account needs it",
                         "set fallback_recipient to a local mailbox such as postmaster@firma.de",
                         code="fallback_needed")
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, list):
        return [_plain(x) for x in value]
    if isinstance(value, dict):
        return {k: _plain(x) for k, x in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def render_config(config: Config) -> Dict[str, Any]:
    """Turn a Config back into the JSON document (secrets in clear, for the 0600 file)."""
    document = _plain(config)
    document["accounts"] = [trim_account(a) for a in document["accounts"]]
    # Keep schema_version first: it is what a human or a migration looks at first.
    return {"schema_version": document.pop("schema_version"), **document}
