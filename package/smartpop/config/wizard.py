"""Turning the install wizard's answers (env vars in postinst) into config.json.

Pure logic: `document_from_wizard(env, existing)` returns the new document. On a
re-install over kept data, wizard answers replace what they cover and everything else
(other accounts, aliases, sender relays) stays; an empty password keeps the old one.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional

from smartpop.config.schema import RELAY_SECURITY, Account, Delivery, default_of, defaults

WIZARD_KEYS = [
    "wizard_fetch_protocol", "wizard_fetch_host", "wizard_fetch_port", "wizard_fetch_security",
    "wizard_fetch_user", "wizard_fetch_password", "wizard_local_domains",
    "wizard_fallback_recipient", "wizard_relay_enable", "wizard_relay_host", "wizard_relay_port",
    "wizard_relay_security", "wizard_relay_user", "wizard_relay_password", "wizard_web_port",
]
SECRET_KEYS = ["wizard_fetch_password", "wizard_relay_password"]

CATCH_ALL = "sammelpostfach"


def _get(env: Mapping[str, str], key: str) -> str:
    return env.get(key, "").strip() if key not in SECRET_KEYS else env.get(key, "")


def _split_list(text: str) -> List[str]:
    parts = text.replace(";", ",").replace(" ", ",").split(",")
    return [p.strip() for p in parts if p.strip()]


def _port(text: str) -> Optional[Any]:
    # Validation happens in the schema, which names the key; here we only pass digits on.
    return int(text) if text.isdigit() else (text or None)


def document_from_wizard(env: Mapping[str, str], existing: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Merge the wizard's env vars into `existing` (or an empty document)."""
    doc: Dict[str, Any] = copy.deepcopy(existing) if existing else {"schema_version": 1}
    host = _get(env, "wizard_fetch_host")
    if host:
        accounts = [a for a in doc.get("accounts", []) if isinstance(a, dict)]
        old = next((a for a in accounts if a.get("name") == CATCH_ALL), {})
        account = dict(old)
        account.update({
            "name": CATCH_ALL,
            "enabled": True,
            "protocol": _get(env, "wizard_fetch_protocol") or default_of(Account, "protocol"),
            "host": host,
            "port": _port(_get(env, "wizard_fetch_port")),
            "security": _get(env, "wizard_fetch_security") or default_of(Account, "security"),
            "username": _get(env, "wizard_fetch_user"),
            "mode": old.get("mode", default_of(Account, "mode")),
        })
        password = _get(env, "wizard_fetch_password")
        account["password"] = password or old.get("password", "")
        doc["accounts"] = [account] + [a for a in accounts if a.get("name") != CATCH_ALL]
    domains = _get(env, "wizard_local_domains")
    if domains:
        doc["local_domains"] = [d.lower() for d in _split_list(domains)]
    fallback = _get(env, "wizard_fallback_recipient")
    if fallback:
        doc["fallback_recipient"] = fallback
    relay = dict(doc.get("relay", {}))
    if _get(env, "wizard_relay_enable") == "true":
        relay.update({
            "enabled": True,
            "host": _get(env, "wizard_relay_host"),
            "port": _port(_get(env, "wizard_relay_port")),
            "security": _get(env, "wizard_relay_security") or RELAY_SECURITY,
            "username": _get(env, "wizard_relay_user"),
        })
        relay["password"] = _get(env, "wizard_relay_password") or relay.get("password", "")
    elif "wizard_relay_enable" in env:
        relay["enabled"] = False
    relay.setdefault("sender_relays", [])
    doc["relay"] = relay
    web_port = _get(env, "wizard_web_port")
    if web_port:
        doc["web"] = {**doc.get("web", {}), "port": _port(web_port)}
    doc.setdefault("delivery", defaults(Delivery))
    return doc
