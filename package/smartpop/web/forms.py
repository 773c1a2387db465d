"""Turning posted forms into config documents, and config errors into per-field messages.

Passwords are write-only: an empty password field keeps the stored value, but only for the
same server and user (see require_same_server). Field messages come from the i18n catalogs
("validation.<code>"), in the page's language; str(exc) stays English.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from werkzeug.datastructures import MultiDict

from smartpop.config import store
from smartpop.config.schema import (
    DEFAULT_PORTS,
    RELAY_SECURITY,
    Account,
    Config,
    Relay,
    default_of,
    defaults,
    parse_config,
    render_config,
)
from smartpop.errors import ConfigError
from smartpop.paths import Paths
from smartpop.web import i18n

Document = Dict[str, Any]
FieldErrors = Dict[str, str]

# The fields each form shows an error next to; an error about any other key goes to the page top.
ACCOUNT_FIELDS = ("name", "enabled", "protocol", "security", "host", "port", "username", "password", "mode",
                  "deliver_to", "interval", "folder", "ca_file", "keep_on_server", "idle", "allow_insecure",
                  "auth", "provider", "client_id", "tenant", "client_secret")
# The account form's OAuth2 inputs, which config.json keeps in the account's `oauth` block.
OAUTH_FIELDS = ("provider", "client_id", "tenant", "client_secret")
# A grant (refresh token) belongs to one app registration and one mailbox: any change here drops it.
GRANT_BINDING = ("provider", "client_id", "tenant")
ROUTING_FIELDS = ("local_domains", "aliases", "fallback_recipient")
RELAY_FIELDS = ("enabled", "host", "port", "security", "username", "password")
SENDER_FIELDS = ("sender", "host", "port", "security", "username", "password")
ALERT_FIELDS = ("failing_minutes", "repeat_minutes", "email_to", "dsm_notify", "webhook_url")
# Where a stored password is sent: an empty password field reuses it only while all of these
# are unchanged, or an admin session or a stolen CSRF token could send it to any host.
ACCOUNT_SERVER = ("protocol", "host", "port", "security", "username")
RELAY_SERVER = ("host", "port", "security", "username")


class FormError(Exception):
    """A form value the UI itself rejects before the config validators see it."""

    def __init__(self, field: str, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.field = field
        self.key = field
        self.code = code
        self.params: Dict[str, Any] = params


def field_of(key: str) -> str:
    """The form field a ConfigError key points at ('accounts[2].port' -> 'port')."""
    # Drop the [index] parts first: an alias key like aliases['info@firma.de'] holds dots itself.
    return re.sub(r"\[[^\]]*\]", "", key).rsplit(".", 1)[-1]


def field_message(exc: Exception, lang: str) -> str:
    """The error in `lang` as shown next to its field (the field's label names the setting)."""
    code = getattr(exc, "code", "")
    if not code:
        # Errors from outside config/ (e.g. the relay's checks) have no message id yet.
        return i18n.translate(lang, "validation.untranslated", detail=str(exc))
    return i18n.translate(lang, "validation." + code, **getattr(exc, "params", {}))


# Which catalog labels name a setting, by where its key lives in config.json.
_LABELS = (("accounts[", ("accounts.field.",)), ("relay.sender_relays[", ("relay.senders.", "relay.field.")),
           ("relay.", ("relay.field.",)), ("alerts.", ("alerts.field.",)), ("trail.", ("trail.setting.",)),
           ("", ("routing.field.",)))
_LABEL_NAMES = {"fallback_recipient": "fallback"}


def setting_label(key: str, lang: str) -> str:
    """The label a form shows for the setting at `key` ('accounts[0].security' -> 'Security'), else the key."""
    field = field_of(key)
    prefixes = next(labels for start, labels in _LABELS if key.startswith(start))
    texts = i18n.catalog(lang)
    for prefix in prefixes:
        text = texts.get(prefix + _LABEL_NAMES.get(field, field))
        if text:
            return text
    return key


def form_message(exc: Exception, lang: str, human: bool = False) -> str:
    """The error in `lang` as a sentence of its own that names the setting.

    `human`: by the label the form shows, never by its key in config.json (a page about a form);
    otherwise by the key (the banner about a config.json the admin edits outside the app)."""
    key = getattr(exc, "key", "")
    if not key or not getattr(exc, "code", ""):
        return field_message(exc, lang)
    setting = setting_label(key, lang) if human else key
    return i18n.translate(lang, "validation.setting", setting=setting, message=field_message(exc, lang))


def errors_of(exc: Exception, lang: str = i18n.DEFAULT, fields: Optional[Collection[str]] = None) -> FieldErrors:
    """Map a ConfigError or FormError to {field: message}; '_form' when the page has no such field."""
    if isinstance(exc, FormError):
        field = exc.field
    elif isinstance(exc, ConfigError):
        field = field_of(exc.key) if exc.key else ""
    else:
        return {"_form": str(exc)}
    if field and (fields is None or field in fields):
        return {field: field_message(exc, lang)}
    return {"_form": form_message(exc, lang, human=True)}


# Valid stand-ins for a field that already has its error: the next validation pass then finds the
# next problem instead of stopping at the same one again (see collect_errors). A default is valid.
ACCOUNT_STANDINS: Dict[str, Any] = {
    **{name: value for name, value in defaults(Account).items() if name in ACCOUNT_FIELDS},
    "name": "standin-account", "host": "mail.example.com", "port": None, "username": "standin",
    "password": "standin", "deliver_to": "standin@example.com"}
RELAY_STANDINS: Dict[str, Any] = {
    "enabled": default_of(Relay, "enabled"), "security": RELAY_SECURITY, "host": "smtp.example.com", "port": None,
    "username": "standin", "password": "standin", "sender": "standin@example.com"}


def collect_errors(document: Document, entry: Callable[[Document], Document], owns: Callable[[str], bool],
                   fields: Collection[str], standins: Mapping[str, Any], lang: str,
                   check: Optional[Callable[[Config], None]] = None) -> FieldErrors:
    """Every field error of one form at once, in `lang`, not only the first one the validators meet.

    The validators stop at the first problem, so this validates again and again, each time with a
    valid stand-in in the field that already has its message. `entry(document)` is the part the
    form edits, `owns(key)` says whether a ConfigError key belongs to it (an error elsewhere in
    the config goes to '_form' and ends the search); `check` runs after each clean parse."""
    errors: FieldErrors = {}
    work = copy.deepcopy(document)
    for _ in range(len(fields) + 1):
        try:
            config = parse_config(work)
            if check is not None:
                check(config)
            return errors
        except (ConfigError, FormError) as exc:
            key = getattr(exc, "key", "")
            field = exc.field if isinstance(exc, FormError) else (field_of(key) if key and owns(key) else "")
            if field in errors:
                return errors  # a check the stand-in cannot satisfy (e.g. the password's server)
            if field not in fields:
                errors.setdefault("_form", form_message(exc, lang, human=True))
                return errors
            errors[field] = field_message(exc, lang)
            if field not in standins:
                return errors
            entry(work)[field] = standins[field]
    return errors


def change_document(paths: Paths, edit: Callable[[Document], None],
                    check: Optional[Callable[[Config, Config], None]] = None) -> Config:
    """Apply `edit` to the stored document through the config store (locked, validated, atomic).

    `check(before, after)` sees both validated configs under the same lock and may refuse the change.
    """
    def change(config: Config) -> Config:
        document = render_config(config)
        edit(document)
        changed = parse_config(document)
        if check is not None:
            check(config, changed)
        return changed
    return store.update(paths, change)


def require_same_server(stored: Any, wanted: Any, fields: Sequence[str]) -> None:
    """Refuse to reuse `stored`'s password for `wanted` unless `fields` (server, user) are all unchanged."""
    if stored is None or not stored.password.reveal():
        return  # nothing stored, nothing to give away
    if any(getattr(stored, name) != getattr(wanted, name) for name in fields):
        raise FormError("password", "password: the server or user name changed, so the stored password is not "
                                    "used. Fix: enter the password for the new server",
                        code="password_for_new_server")


def _checkbox(form: MultiDict[str, str], name: str) -> bool:
    return form.get(name) in ("on", "true", "1")


def _opt(form: MultiDict[str, str], name: str) -> Optional[str]:
    value = (form.get(name) or "").strip()
    return value or None


def new_account_values() -> Document:
    """What the account form shows for a new account: each setting at its config.json default."""
    shown = {name: value for name, value in defaults(Account).items() if name in ACCOUNT_FIELDS}
    shown["port"] = ""  # empty: the default port follows protocol and security (the page shows it)
    return shown


def _server_of(doc: Mapping[str, Any]) -> Tuple[Any, ...]:
    """Where an account logs in, with the default port filled in (the form may leave it empty)."""
    protocol, security = doc.get("protocol"), doc.get("security")
    port = doc.get("port") or DEFAULT_PORTS.get((protocol, security))  # type: ignore[arg-type]
    return (protocol, str(doc.get("host") or "").lower(), str(port), security, doc.get("username"))


def oauth_document(form: MultiDict[str, str], existing: Optional[Document], server: Tuple[Any, ...]) -> Document:
    """The `oauth` block from the form: an empty client secret keeps the stored one for the same client,
    and the stored grant stays only while the app registration and the server and user are unchanged."""
    stored: Mapping[str, Any] = (existing or {}).get("oauth") or {}
    provider = (form.get("provider") or "").strip()
    block: Document = {"provider": provider, "client_id": (form.get("client_id") or "").strip()}
    if provider == "microsoft":
        block["tenant"] = (form.get("tenant") or "").strip() or "common"
    same_client = all(stored.get(k) == block.get(k) for k in ("provider", "client_id"))
    secret = form.get("client_secret", "") or (stored.get("client_secret", "") if same_client else "")
    if provider != "microsoft" or secret:
        block["client_secret"] = secret
    same_grant = all((stored.get(k) or "") == (block.get(k) or "") for k in GRANT_BINDING)
    if stored.get("refresh_token") and same_grant and existing is not None and _server_of(existing) == server:
        block["refresh_token"] = stored["refresh_token"]
    return block


def account_document(form: MultiDict[str, str], existing: Optional[Document]) -> Document:
    """An account document from the account form; keeps the stored password when left empty."""
    if form.get("auth") == "oauth2":
        return _oauth_account_document(form, existing)
    password = form.get("password", "")
    if not password:
        if existing is None:
            raise FormError("password", "password: is missing. Fix: enter the mailbox password",
                            code="password_missing")
        password = existing.get("password", "")
    doc: Document = dict(existing or {})
    default = defaults(Account)
    doc.update({
        "name": (form.get("name") or "").strip() if existing is None else existing["name"],
        "enabled": _checkbox(form, "enabled"),
        "protocol": form.get("protocol", default["protocol"]),
        "host": (form.get("host") or "").strip(),
        "port": _opt(form, "port"),
        "security": form.get("security", default["security"]),
        "allow_insecure": _checkbox(form, "allow_insecure"),
        "username": (form.get("username") or "").strip(),
        "password": password,
        "ca_file": _opt(form, "ca_file"),
        "mode": form.get("mode", default["mode"]),
        "deliver_to": _opt(form, "deliver_to"),
        "keep_on_server": _checkbox(form, "keep_on_server"),
        "interval": _opt(form, "interval") or default["interval"],
        "folder": _opt(form, "folder") or default["folder"],
        "idle": _checkbox(form, "idle"),
    })
    doc["auth"] = "password"
    doc.pop("oauth", None)
    return doc


def _oauth_account_document(form: MultiDict[str, str], existing: Optional[Document]) -> Document:
    """An OAuth2 account: no password (none is kept either: a token replaces it), the oauth block."""
    blank = MultiDict(form)
    blank["password"], blank["auth"] = "unused", "password"
    doc = account_document(blank, existing)
    doc.update(auth="oauth2", password="")
    doc["oauth"] = oauth_document(form, existing, _server_of(doc))
    return doc


def parse_lines(text: str) -> List[str]:
    """Split a textarea into non-empty entries (newlines or commas)."""
    return [part.strip() for part in re.split(r"[\n,;]", text or "") if part.strip()]


def parse_aliases(text: str) -> Dict[str, List[str]]:
    """Parse 'alias@x: a@x, b@x' lines into the aliases mapping."""
    aliases: Dict[str, List[str]] = {}
    for number, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        alias, sep, targets = line.partition(":")
        if not sep or not alias.strip() or not parse_lines(targets):
            raise FormError("aliases", f"aliases: line {number} is not 'alias@domain: target@domain, ...'. "
                                       "Fix: write one alias per line, a colon, then the target addresses",
                            code="alias_line", line=number)
        aliases[alias.strip()] = parse_lines(targets)
    return aliases


def aliases_text(aliases: Dict[str, List[str]]) -> str:
    """The aliases mapping as textarea lines."""
    return "\n".join(f"{alias}: {', '.join(targets)}" for alias, targets in sorted(aliases.items()))


def relay_fields(form: MultiDict[str, str], existing: Document) -> Document:
    """The main relay settings from the relay form; keeps the stored password when left empty."""
    return {
        "enabled": _checkbox(form, "enabled"),
        "host": _opt(form, "host"),
        "port": _opt(form, "port"),
        "security": form.get("security", RELAY_SECURITY),
        "username": (form.get("username") or "").strip(),
        "password": form.get("password") or existing.get("password", ""),
    }


def sender_relay_document(form: MultiDict[str, str], existing: List[Document]) -> Tuple[Document, int]:
    """A sender relay from the form and the index it replaces (-1 = new)."""
    sender = (form.get("sender") or "").strip()
    index = next((i for i, item in enumerate(existing) if item.get("sender") == sender), -1)
    password = form.get("password") or (existing[index].get("password", "") if index >= 0 else "")
    if not password:
        raise FormError("password", "password: is missing. Fix: enter the SMTP password", code="password_missing")
    return ({"sender": sender, "host": (form.get("host") or "").strip(), "port": _opt(form, "port"),
             "security": form.get("security", RELAY_SECURITY), "username": (form.get("username") or "").strip(),
             "password": password}, index)
