"""Shared fixtures: a data dir with a valid config, the package source on sys.path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data dir."""
    directory = tmp_path / "data"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def configured_data_dir(data_dir: Path) -> Path:
    """A data dir holding a valid config.json (mode 0600)."""
    path = data_dir / "config.json"
    path.write_text(json.dumps(sample_document()))
    path.chmod(0o600)
    return data_dir


@pytest.fixture(scope="session")
def built_spk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .spk built from this checkout (once per session)."""
    from support.build import build_spk

    return build_spk(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def built_spk_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second build of this checkout with a higher version, for upgrade tests."""
    from support.build import build_spk

    return build_spk(tmp_path_factory.mktemp("dist2"), version="0.1.0-0002")
