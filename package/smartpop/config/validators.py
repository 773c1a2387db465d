"""Pure value validators shared by the config schema and the relay's root entry point.

Each returns the normalised value or raises ConfigError naming the key and the fix. Each error
also carries a message id (`code`) and its parameters, which the web UI translates; the web
catalogs hold the text of every id as "validation.<code>" (tests/web/test_field_errors.py checks).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Optional, Sequence, TypeVar

from smartpop.errors import ConfigError

Choice = TypeVar("Choice", bound=str)

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# OAuth2 values that go into URLs and form fields: nothing that could add a line, a field or a path.
# The OAuth2 shapes are checked here once; oauth/providers.py uses the same patterns, so an
# account the config accepts can never fail the provider's check only at login time.
TENANT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,98}[A-Za-z0-9])?$")
# Client ids are a GUID (Microsoft) or `<digits>-<id>.apps.googleusercontent.com` (Google).
CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_TOKEN = re.compile(r"^[\x21-\x7e]*$")
TOKEN_MAX = 16384
# Host names and IP literals are checked by character set before ipaddress sees them: from
# Python 3.9 on, ipaddress accepts an IPv6 scope id ("fe80::1%<anything>"), and 3.8 and 3.13
# differ in leading zeros and in how they print IPv4-mapped addresses. These sets are the same
# on every version, and none holds '%', '$', '#', ',', '[', ']', '/' or white space.
_HOST_CHARS = re.compile(r"^[a-z0-9.-]+$")
_IPV6_CHARS = re.compile(r"^[0-9a-f:.]+$")
_IPV4 = re.compile(r"^(?:(?:0|[1-9][0-9]{0,2})\.){3}(?:0|[1-9][0-9]{0,2})$")
_NUMERIC = re.compile(r"^[0-9.]+$")


def fail(key: str, problem: str, fix: str, code: str = "", **params: Any) -> ConfigError:
    """Build the one error shape: '<key>: <problem>. Fix: <fix>' (plus message id and parameters)."""
    # Without a code the UI shows the English text as is; every caller in config/ passes one.
    return ConfigError(f"{key}: {problem}. Fix: {fix}", key=key, code=code, params=params)


def as_bool(key: str, value: Any) -> bool:
    """Accept a JSON boolean only."""
    if isinstance(value, bool):
        return value
    raise fail(key, f"must be true or false, got {value!r}", f"set {key} to true or false",
               code="not_a_bool", value=_shown(value))


def as_int(key: str, value: Any, low: int, high: int) -> int:
    """Accept an integer in [low, high] (JSON number or digit string)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(key, f"must be a whole number from {low} to {high}, got {value!r}",
                   f"set {key} to a number between {low} and {high}",
                   code="not_in_range", low=low, high=high, value=_shown(value))
    return int(value)


def as_port(key: str, value: Any) -> int:
    """Accept a TCP port."""
    return as_int(key, value, 1, 65535)


def as_choice(key: str, value: Any, choices: Sequence[Choice]) -> Choice:
    """Accept one of a fixed set of strings (typed as the set, e.g. a Literal)."""
    if value not in choices:
        raise fail(key, f"must be one of {', '.join(choices)}, got {value!r}",
                   f"set {key} to one of: {', '.join(choices)}",
                   code="not_a_choice", choices=", ".join(choices), value=_shown(value))
    return choices[list(choices).index(value)]


def as_text(key: str, value: Any, max_len: int = 256, allow_empty: bool = False) -> str:
    """Accept a single-line string without control characters."""
    if not isinstance(value, str):
        raise fail(key, f"must be text, got {type(value).__name__}", f"set {key} to a text value",
                   code="not_text")
    if _CONTROL.search(value):
        raise fail(key, "contains a line break or control character",
                   f"remove line breaks and control characters from {key}", code="control_characters")
    if not value and not allow_empty:
        raise fail(key, "is empty", f"fill in {key}", code="empty")
    if len(value) > max_len:
        raise fail(key, f"is longer than {max_len} characters", f"shorten {key}", code="too_long",
                   max_len=max_len)
    return value


def as_secret_text(key: str, value: Any) -> str:
    """Accept a password: one line, no control characters, never echoed in the error."""
    if not isinstance(value, str):
        raise fail(key, "must be text", f"enter {key} again", code="secret_not_text")
    if _CONTROL.search(value):
        raise fail(key, "contains a line break or control character",
                   f"enter {key} again without line breaks", code="secret_control_characters")
    if len(value) > 512:
        raise fail(key, "is longer than 512 characters", f"shorten {key}", code="too_long", max_len=512)
    return value


def as_tenant(key: str, value: Any) -> str:
    """Accept a Microsoft tenant: common, organizations, consumers, a tenant id or a domain."""
    text = as_text(key, value, max_len=100)
    if not TENANT.match(text):
        raise fail(key, f"{value!r} is not a tenant", "use common, organizations, consumers, a tenant id or a domain",
                   code="not_a_tenant", value=_shown(value))
    return text


def as_client_id(key: str, value: Any) -> str:
    """Accept an OAuth2 client id: printable ASCII without spaces, at most 200 characters."""
    text = as_text(key, value, max_len=200)
    if not CLIENT_ID.match(text):
        raise fail(key, "may hold only letters, digits, '.', '_' and '-'",
                   "copy the application (client) id of your app registration again", code="not_a_client_id")
    return text


def as_token(key: str, value: Any) -> str:
    """Accept an OAuth2 token or client secret: printable ASCII, no spaces, never echoed in the error."""
    if not isinstance(value, str):
        raise fail(key, "must be text", f"enter {key} again", code="secret_not_text")
    if not _TOKEN.match(value):
        raise fail(key, "contains a space, line break or control character",
                   f"enter {key} again", code="secret_control_characters")
    if len(value) > TOKEN_MAX:
        raise fail(key, f"is longer than {TOKEN_MAX} characters", f"sign in again for {key}", code="too_long",
                   max_len=TOKEN_MAX)
    return value


def as_hostname(key: str, value: Any) -> str:
    """Accept a DNS name, an IPv4 literal or an IPv6 literal (optionally in [brackets]; no scope id, no port)."""
    raw = as_text(key, value, max_len=253)
    text = raw.strip().lower()
    bracketed = text.startswith("[") and text.endswith("]")
    if bracketed:
        # "[2001:db8::1]" is how admins often write an IPv6 host; the brackets are not stored
        # (the relay adds Postfix's own). Brackets around anything else are refused.
        text = text[1:-1]
    if bracketed or ":" in text:
        address = _ipv6(text)
        if address is None:
            raise _not_a_host(key, value)
        return address
    text = text.rstrip(".")
    if not _HOST_CHARS.match(text) or not all(_LABEL.match(label) for label in text.split(".")):
        raise _not_a_host(key, value)
    if _NUMERIC.match(text):
        # All digits and dots: an IPv4 address in plain decimal, or nothing (a resolver would read
        # "010.1.1.1" as octal, "1.2.3" as 1.2.0.3).
        if not _IPV4.match(text) or any(int(part) > 255 for part in text.split(".")):
            raise _not_a_host(key, value)
    return text


def _ipv6(text: str) -> Optional[str]:
    """The canonical form of an IPv6 literal made only of hex digits, ':' and a dotted IPv4 tail."""
    if not _IPV6_CHARS.match(text):
        return None
    tail = text.rpartition(":")[2]
    if "." in tail and (not _IPV4.match(tail) or any(int(part) > 255 for part in tail.split("."))):
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    # Python 3.13 prints "::ffff:1.2.3.4", 3.8 "::ffff:102:304": store one form everywhere.
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def _not_a_host(key: str, value: Any) -> ConfigError:
    return fail(key, f"{value!r} is not a valid host name",
                f"set {key} to a name like mail.example.com or an IP address",
                code="not_a_host", value=_shown(value))


def as_domain(key: str, value: Any) -> str:
    """Accept a mail domain (a DNS name with at least one dot)."""
    domain = as_hostname(key, value)
    if "." not in domain or _is_ip(domain):
        raise fail(key, f"{value!r} is not a mail domain", f"set {key} to a domain like firma.de",
                   code="not_a_domain", value=_shown(value))
    return domain


def as_address(key: str, value: Any) -> str:
    """Accept a bare mail address local@domain (domain lower-cased)."""
    text = as_text(key, value, max_len=320).strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not _LOCAL_PART.match(local) or local.startswith(".") or ".." in local:
        raise fail(key, f"{value!r} is not a mail address", f"set {key} to an address like anna@firma.de",
                   code="not_an_address", value=_shown(value))
    return local + "@" + as_domain(key, domain)


def as_sender_pattern(key: str, value: Any) -> str:
    """Accept a sender key for per-sender relays: an address or '@domain'."""
    text = as_text(key, value, max_len=320).strip()
    if text.startswith("@"):
        return "@" + as_domain(key, text[1:])
    return as_address(key, text)


def as_name(key: str, value: Any) -> str:
    """Accept an account name: lower-case letters, digits, '.', '_' and '-'."""
    text = as_text(key, value, max_len=64)
    if not _NAME.match(text):
        raise fail(key, f"{value!r} is not a valid name",
                   "use lower-case letters, digits, '.', '_' or '-' (max. 64), starting with a letter or digit",
                   code="not_a_name", value=_shown(value))
    return text


def as_optional(key: str, value: Any, inner: Any) -> Optional[Any]:
    """Accept null or whatever `inner(key, value)` accepts."""
    if value is None or value == "":
        return None
    return inner(key, value)


def as_path(key: str, value: Any) -> str:
    """Accept an absolute file path."""
    text = as_text(key, value, max_len=4096)
    if not text.startswith("/"):
        raise fail(key, f"{value!r} is not an absolute path", f"set {key} to a full path starting with /",
                   code="not_an_absolute_path", value=_shown(value))
    return text


def _shown(value: Any) -> str:
    """The rejected value as the UI may quote it (never called with a secret)."""
    return value if isinstance(value, str) else repr(value)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
