"""Ordered migrations of config.json documents to the current schema version.

Version 0 is a document without `schema_version` (written before versioning, and the
shape some early notes used): accounts with `ssl: true|false` instead of `security`,
`keep` instead of `keep_on_server`, and `fallback` instead of `fallback_recipient`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Dict, List, Tuple

from smartpop.config import validators as v
from smartpop.config.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

Document = Dict[str, Any]


def _v0_to_v1(doc: Document) -> Document:
    """Rename the pre-versioning keys and stamp schema_version 1."""
    if "fallback" in doc and "fallback_recipient" not in doc:
        doc["fallback_recipient"] = doc.pop("fallback")
    for account in doc.get("accounts", []) or []:
        if not isinstance(account, dict):
            continue
        if "ssl" in account and "security" not in account:
            account["security"] = "ssl" if account.pop("ssl") else "starttls"
        if "keep" in account and "keep_on_server" not in account:
            account["keep_on_server"] = bool(account.pop("keep"))
    doc["schema_version"] = 1
    return doc


MIGRATIONS: List[Tuple[int, Callable[[Document], Document]]] = [(0, _v0_to_v1)]


def _port_holders(doc: Document) -> List[Tuple[str, Dict[str, Any]]]:
    """(key path, the object holding `port`) for every port setting of a document."""
    holders: List[Tuple[str, Any]] = [("web", doc.get("web")), ("delivery", doc.get("delivery")),
                                      ("relay", doc.get("relay"))]
    accounts = doc.get("accounts")
    if isinstance(accounts, list):
        holders += [(f"accounts[{i}]", a) for i, a in enumerate(accounts)]
    relay = doc.get("relay")
    if isinstance(relay, dict) and isinstance(relay.get("sender_relays"), list):
        holders += [(f"relay.sender_relays[{i}]", r) for i, r in enumerate(relay["sender_relays"])]
    return [(key, holder) for key, holder in holders if isinstance(holder, dict)]


def normalise_ports(doc: Document) -> List[str]:
    """Turn ports written as text ("8765") into numbers in place; one note per change.

    A hand-edited or scripted config.json often quotes numbers. Anything but digits stays as it
    is, so the schema refuses it with the key named.
    """
    notes = []
    for key, holder in _port_holders(doc):
        value = holder.get("port")
        if isinstance(value, str) and value.strip().isdigit():
            holder["port"] = int(value.strip())
            notes.append(f"{key}.port: {value!r} is text; read it as the number {holder['port']} "
                         "and saved it without quotes")
    return notes


def migrate(raw: Any) -> Tuple[Document, bool]:
    """Bring a document up to SCHEMA_VERSION; return (document, whether it changed)."""
    if not isinstance(raw, dict):
        raise v.fail("config", "must be a JSON object", "make config.json a {...} object")
    doc: Document = copy.deepcopy(raw)
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise v.fail("schema_version", f"{version!r} is not a version number", "set schema_version to 1")
    if version > SCHEMA_VERSION:
        raise v.fail("schema_version", f"{version} is newer than this SmartPop ({SCHEMA_VERSION})",
                     "upgrade SmartPop to the version that wrote this config")
    changed = False
    for from_version, step in MIGRATIONS:
        if version == from_version:
            doc = step(doc)
            version = doc["schema_version"]
            changed = True
            log.info("config migrated from schema %d to %d", from_version, version)
    for note in normalise_ports(doc):
        log.warning("config.json: %s", note)
        changed = True
    return doc, changed
