"""Turning posted forms into config documents, and config errors into per-field messages.

Passwords are write-only: an empty password field keeps the stored value.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from werkzeug.datastructures import MultiDict

from smartpop.config import store
from smartpop.config.schema import Config, parse_config, render_config
from smartpop.errors import ConfigError
from smartpop.paths import Paths

Document = Dict[str, Any]
FieldErrors = Dict[str, str]


class FormError(Exception):
    """A form value the UI itself rejects before the config validators see it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def field_of(key: str) -> str:
    """The form field a ConfigError key points at ('accounts[2].port' -> 'port')."""
    last = key.rsplit(".", 1)[-1]
    return re.sub(r"\[.*\]$", "", last)


def errors_of(exc: Exception) -> FieldErrors:
    """Map a ConfigError or FormError to {field: message}."""
    if isinstance(exc, FormError):
        return {exc.field: str(exc)}
    if isinstance(exc, ConfigError):
        return {field_of(exc.key) if exc.key else "_form": str(exc)}
    return {"_form": str(exc)}


def change_document(paths: Paths, edit: Callable[[Document], None]) -> Config:
    """Apply `edit` to the stored document through the config store (locked, validated, atomic)."""
    def change(config: Config) -> Config:
        document = render_config(config)
        edit(document)
        return parse_config(document)
    return store.update(paths, change)


def _checkbox(form: MultiDict, name: str) -> bool:
    return form.get(name) in ("on", "true", "1")


def _opt(form: MultiDict, name: str) -> Optional[str]:
    value = (form.get(name) or "").strip()
    return value or None


def account_document(form: MultiDict, existing: Optional[Document]) -> Document:
    """An account document from the account form; keeps the stored password when left empty."""
    password = form.get("password", "")
    if not password:
        if existing is None:
            raise FormError("password", "password: is missing. Fix: enter the mailbox password")
        password = existing.get("password", "")
    doc: Document = dict(existing or {})
    doc.update({
        "name": (form.get("name") or "").strip() if existing is None else existing["name"],
        "enabled": _checkbox(form, "enabled"),
        "protocol": form.get("protocol", "pop3"),
        "host": (form.get("host") or "").strip(),
        "port": _opt(form, "port"),
        "security": form.get("security", "ssl"),
        "allow_insecure": _checkbox(form, "allow_insecure"),
        "username": (form.get("username") or "").strip(),
        "password": password,
        "ca_file": _opt(form, "ca_file"),
        "mode": form.get("mode", "multidrop"),
        "deliver_to": _opt(form, "deliver_to"),
        "keep_on_server": _checkbox(form, "keep_on_server"),
        "interval": _opt(form, "interval") or 60,
        "folder": _opt(form, "folder") or "INBOX",
        "idle": _checkbox(form, "idle"),
    })
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
                                       "Fix: write one alias per line, a colon, then the target addresses")
        aliases[alias.strip()] = parse_lines(targets)
    return aliases


def aliases_text(aliases: Dict[str, List[str]]) -> str:
    """The aliases mapping as textarea lines."""
    return "\n".join(f"{alias}: {', '.join(targets)}" for alias, targets in sorted(aliases.items()))


def relay_fields(form: MultiDict, existing: Document) -> Document:
    """The main relay settings from the relay form; keeps the stored password when left empty."""
    return {
        "enabled": _checkbox(form, "enabled"),
        "host": _opt(form, "host"),
        "port": _opt(form, "port"),
        "security": form.get("security", "starttls"),
        "username": (form.get("username") or "").strip(),
        "password": form.get("password") or existing.get("password", ""),
    }


def sender_relay_document(form: MultiDict, existing: List[Document]) -> Tuple[Document, int]:
    """A sender relay from the form and the index it replaces (-1 = new)."""
    sender = (form.get("sender") or "").strip()
    index = next((i for i, item in enumerate(existing) if item.get("sender") == sender), -1)
    password = form.get("password") or (existing[index].get("password", "") if index >= 0 else "")
    if not password:
        raise FormError("password", "password: is missing. Fix: enter the SMTP password")
    return ({"sender": sender, "host": (form.get("host") or "").strip(), "port": _opt(form, "port"),
             "security": form.get("security", "starttls"), "username": (form.get("username") or "").strip(),
             "password": password}, index)
