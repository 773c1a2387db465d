"""Shared sample data for tests (importable from any test directory, unlike conftest)."""

from __future__ import annotations

from typing import Any, Dict


def sample_document() -> Dict[str, Any]:
    """A valid config.json document in the contract's shape."""
    return {
        "schema_version": 1,
        "accounts": [{
            "name": "sammelpostfach", "enabled": True, "protocol": "pop3", "host": "pop.provider.de",
            "port": 995, "security": "ssl", "username": "sammel@firma.de", "password": "s3cret-Fetch!",
            "ca_file": None, "mode": "multidrop", "deliver_to": None, "keep_on_server": False,
        }],
        "local_domains": ["firma.de"],
        "aliases": {"info@firma.de": ["anna@firma.de", "ben@firma.de"]},
        "fallback_recipient": "postmaster@firma.de",
        "delivery": {"host": "127.0.0.1", "port": 25},
        "relay": {"enabled": False, "host": "smtp.provider.de", "port": 587, "security": "starttls",
                  "username": "relay@firma.de", "password": "s3cret-Relay!", "sender_relays": []},
        "web": {"port": 8765},
    }
