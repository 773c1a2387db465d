"""Pure: the relay config -> desired Postfix parameters, map files and master.cf services.

This is the root entry point's trust boundary: every value from config.json is validated
again here (the package user can write that file), and only whitelisted parameters appear.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from smartpop.config import validators as v
from smartpop.errors import ConfigError

SASL_MAP = "smartpop_sasl_passwd"
SENDER_RELAY_MAP = "smartpop_sender_relay"
SENDER_TRANSPORT_MAP = "smartpop_sender_transport"
MAP_NAMES = (SASL_MAP, SENDER_RELAY_MAP, SENDER_TRANSPORT_MAP)
TRANSPORT_SSL = "smartpop-ssl"
TRANSPORT_TLS = "smartpop-tls"

# The only main.cf parameters SmartPop ever writes.
WHITELIST = frozenset({
    "relayhost",
    "smtp_sasl_auth_enable",
    "smtp_sasl_password_maps",
    "smtp_sasl_security_options",
    "smtp_sasl_tls_security_options",
    "smtp_sasl_mechanism_filter",
    "smtp_tls_security_level",
    "smtp_tls_wrappermode",
    "smtp_tls_CAfile",
    "smtp_sender_dependent_authentication",
    "sender_dependent_relayhost_maps",
    "sender_dependent_default_transport_maps",
})
SECURITIES = ["starttls", "ssl"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# 'secure' = TLS is mandatory (as with 'encrypt') and the certificate must chain to
# smtp_tls_CAfile and match the relay's host name; 'encrypt' alone would accept any certificate.
TLS_LEVEL = "secure"


@dataclass
class Desired:
    """What the Postfix dir should contain (params empty = relay off, block removed)."""

    params: Dict[str, str] = field(default_factory=dict)
    maps: Dict[str, str] = field(default_factory=dict)  # file name -> source text
    master_lines: List[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A stable hash of the desired state (lets the unprivileged side see 'pending')."""
        blob = json.dumps([self.params, self.maps, self.master_lines], sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _username(key: str, value: Any) -> str:
    text = v.as_text(key, value, max_len=320)
    # The password map value is 'user:password': the first ':' splits it, whitespace ends a key.
    if ":" in text or any(ch.isspace() for ch in text):
        raise v.fail(key, "must not contain ':' or spaces", f"enter {key} without ':' and spaces")
    return text


def _password(key: str, value: Any) -> str:
    text = v.as_secret_text(key, value)
    if not text:
        raise v.fail(key, "is empty", f"enter {key}")
    if text != text.strip():
        # Postfix strips whitespace around map values, so the provider would see another password.
        raise v.fail(key, "starts or ends with a space", f"enter {key} without surrounding spaces")
    return text


def maincf_path(path: str, what: str = "CA bundle path") -> str:
    """A path as it may appear in main.cf (absolute, no spaces, '$', ',' or controls)."""
    # '$' would be expanded by Postfix, ',' and whitespace split lists: refuse rather than quote.
    if (not path.startswith("/") or any(ch.isspace() or ch in "$,\\" for ch in path)
            or _CONTROL.search(path) or "/../" in path + "/"):
        raise ConfigError(f"{what} {path!r} cannot be used in main.cf "
                          "(needs an absolute path without spaces, '$', ',' or '..')")
    return path


def ca_file_value(path: str) -> str:
    """A CA bundle path as it may appear in main.cf."""
    return maincf_path(path)


def _nexthop(host: str, port: int) -> str:
    # Brackets: no MX lookup. IPv6 literals need the ipv6: prefix inside the brackets.
    inner = f"ipv6:{host}" if ":" in host else host
    return f"[{inner}]:{port}"


_SENDER_LOCAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


def _sender(key: str, value: Any) -> str:
    """A per-sender key, stricter than RFC 5321: it becomes a lookup key in two map files."""
    sender = v.as_sender_pattern(key, value)
    local = sender.rpartition("@")[0]
    # '#' would turn the map line into a comment; '$', '`', '|', '/' etc. are legal in an
    # address but have no business in a root-written file, so refuse them outright.
    if local and not _SENDER_LOCAL.match(local):
        raise v.fail(key, f"{sender!r} has characters SmartPop does not accept in a relay sender",
                     "use letters, digits and . _ + = - before the @, or '@domain'")
    return sender


# What a validated host name or IP literal consists of, checked again right where it becomes
# part of a next-hop in root-written files (brackets and "ipv6:" are added by _nexthop).
_NEXTHOP_HOST = re.compile(r"^[a-z0-9.:-]+$")


def _host(key: str, value: Any) -> str:
    host = v.as_hostname(key, value)
    if not _NEXTHOP_HOST.match(host):
        raise v.fail(key, f"{host!r} has characters that cannot go into main.cf",
                     f"set {key} to a host name or an IP address without a scope id")
    return host


def _relay_fields(key: str, raw: Any) -> Tuple[str, int, str, str, str]:
    """Re-validate one relay's (host, port, security, username, password)."""
    host = _host(f"{key}.host", getattr(raw, "host", None))
    port = v.as_port(f"{key}.port", getattr(raw, "port", None))
    security = v.as_choice(f"{key}.security", getattr(raw, "security", None), SECURITIES)
    username = _username(f"{key}.username", getattr(raw, "username", None))
    secret: Any = getattr(raw, "password", None)
    reveal = getattr(secret, "reveal", None)
    password = _password(f"{key}.password", reveal() if callable(reveal) else secret)
    return host, port, security, username, password


def desired_from_relay(relay: Any, maps_dir: str, map_type: str, ca_file: Optional[str] = None) -> Desired:
    """Build the desired state from a schema Relay (re-validated, never trusted).

    `maps_dir` is where the map files live (layout.py: outside MailPlus's target/); `ca_file` is
    the CA bundle Postfix verifies the providers against (see trust.find_ca_file).
    """
    if not v.as_bool("relay.enabled", getattr(relay, "enabled", False)):
        return Desired()
    if map_type not in ("hash", "btree", "lmdb", "cdb", "texthash"):
        raise ConfigError(f"unsupported map type {map_type!r}")
    host, port, security, username, password = _relay_fields("relay", relay)
    # The maps dir is named in main.cf: the same rules as any path there.
    maps_dir = maincf_path(maps_dir, "maps dir")
    default_hop = _nexthop(host, port)

    def table(name: str) -> str:
        return f"{map_type}:{maps_dir.rstrip('/')}/{name}"

    params = {
        "relayhost": default_hop,
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": table(SASL_MAP),
        # PLAIN/LOGIN only, and only inside TLS (the level below is 'encrypt').
        "smtp_sasl_security_options": "noanonymous, noplaintext",
        "smtp_sasl_tls_security_options": "noanonymous",
        "smtp_sasl_mechanism_filter": "plain, login",
        "smtp_tls_security_level": TLS_LEVEL,
        # Wrapper mode follows `security`, never the port number.
        "smtp_tls_wrappermode": "yes" if security == "ssl" else "no",
    }
    if ca_file is not None:
        params["smtp_tls_CAfile"] = ca_file_value(ca_file)
    sasl_lines = [f"{default_hop} {username}:{password}"]
    senders = getattr(relay, "sender_relays", None) or []
    if not isinstance(senders, list):
        raise v.fail("relay.sender_relays", "must be a list", "make relay.sender_relays a list")
    maps: Dict[str, str] = {}
    if senders:
        relay_lines: List[str] = []
        transport_lines: List[str] = []
        seen = set()
        for i, item in enumerate(senders):
            key = f"relay.sender_relays[{i}]"
            sender = _sender(f"{key}.sender", getattr(item, "sender", None))
            if sender in seen:
                raise v.fail(f"{key}.sender", f"{sender} is listed twice", "keep one entry per sender")
            seen.add(sender)
            s_host, s_port, s_security, s_user, s_password = _relay_fields(key, item)
            relay_lines.append(f"{sender} {_nexthop(s_host, s_port)}")
            transport_lines.append(f"{sender} {TRANSPORT_SSL if s_security == 'ssl' else TRANSPORT_TLS}")
            # Keyed by sender, as smtp_sender_dependent_authentication looks it up first.
            sasl_lines.append(f"{sender} {s_user}:{s_password}")
        params["smtp_sender_dependent_authentication"] = "yes"
        params["sender_dependent_relayhost_maps"] = table(SENDER_RELAY_MAP)
        params["sender_dependent_default_transport_maps"] = table(SENDER_TRANSPORT_MAP)
        maps[SENDER_RELAY_MAP] = "".join(line + "\n" for line in relay_lines)
        maps[SENDER_TRANSPORT_MAP] = "".join(line + "\n" for line in transport_lines)
        master_lines = [
            # Per-sender TLS mode needs its own smtp transport (smtp_tls_wrappermode is global).
            f"{TRANSPORT_SSL} unix  -       -       n       -       -       smtp",
            "  -o smtp_tls_wrappermode=yes",
            f"  -o smtp_tls_security_level={TLS_LEVEL}",
            f"{TRANSPORT_TLS} unix  -       -       n       -       -       smtp",
            "  -o smtp_tls_wrappermode=no",
            f"  -o smtp_tls_security_level={TLS_LEVEL}",
        ]
    else:
        master_lines = []
    maps[SASL_MAP] = "".join(line + "\n" for line in sasl_lines)
    assert set(params) <= WHITELIST
    return Desired(params=params, maps=maps, master_lines=master_lines)


def main_block_lines(desired: Desired) -> List[str]:
    """main.cf block body for the desired parameters (fixed order, whitelisted names only)."""
    return [f"{name} = {desired.params[name]}" for name in sorted(desired.params) if name in WHITELIST]
