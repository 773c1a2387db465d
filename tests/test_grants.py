"""config/grants.py: storing and forgetting an OAuth2 refresh token in config.json."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from smartpop.config import grants, store
from smartpop.config.schema import parse_config
from smartpop.errors import ConfigError
from smartpop.paths import Paths
from support.samples import sample_document

ROOT = Path(__file__).resolve().parent.parent


def oauth_account(name: str, token: str = "") -> Dict[str, Any]:
    return {"name": name, "host": "outlook.office365.com", "username": f"{name}@firma.de", "auth": "oauth2",
            "oauth": {"provider": "microsoft", "client_id": "client-1", "refresh_token": token}}


@pytest.fixture
def paths(data_dir: Path) -> Paths:
    doc = sample_document()
    doc["accounts"] += [oauth_account("outlook"), oauth_account("zweites", "rt-other")]
    result = Paths(data_dir)
    store.save(result, parse_config(doc))
    return result


def without_token(text: bytes, account: str) -> Dict[str, Any]:
    """config.json with `account`'s refresh token blanked, for comparing everything else."""
    doc = json.loads(text)
    for item in doc["accounts"]:
        if item["name"] == account:
            item["oauth"]["refresh_token"] = "<token>"
    return doc


def test_save_changes_only_that_token_and_keeps_0600(paths: Paths) -> None:
    before = paths.config.read_bytes()
    os.chmod(paths.config, 0o644)
    grants.save_refresh_token(paths, "outlook", "rt-New.token_1~x")
    after = paths.config.read_bytes()
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600
    assert store.load(paths).account("outlook").oauth.refresh_token.reveal() == "rt-New.token_1~x"  # type: ignore[union-attr]
    assert without_token(after, "outlook") == without_token(before, "outlook")
    # Byte for byte: only the one value differs.
    assert after.replace(b'"rt-New.token_1~x"', b'""') == before
    assert b"rt-other" in after


def test_forget_empties_the_token_only(paths: Paths) -> None:
    before = paths.config.read_bytes()
    grants.forget_refresh_token(paths, "zweites")
    after = paths.config.read_bytes()
    assert after == before.replace(b'"rt-other"', b'""')
    assert not store.load(paths).account("zweites").oauth.refresh_token  # type: ignore[union-attr]


@pytest.mark.parametrize("token", ["rt\nx", "rt x", "rt\x00", "rt\t", "", "x" * 20000])
def test_an_injected_or_empty_token_is_refused(paths: Paths, token: str) -> None:
    before = paths.config.read_bytes()
    with pytest.raises(ConfigError):
        grants.save_refresh_token(paths, "outlook", token)
    assert paths.config.read_bytes() == before


def test_unknown_and_password_accounts_are_refused(paths: Paths) -> None:
    before = paths.config.read_bytes()
    with pytest.raises(ConfigError) as gone:
        grants.save_refresh_token(paths, "weg", "rt-1")
    assert gone.value.code == "no_such_account"
    with pytest.raises(ConfigError) as password:
        grants.forget_refresh_token(paths, "sammelpostfach")
    assert password.value.code == "not_oauth2" and password.value.key == "accounts[0].auth"
    assert paths.config.read_bytes() == before


WRITER = """
import sys, time
from pathlib import Path
from smartpop.config import grants, store
from smartpop.paths import Paths
paths, name = Paths(Path(sys.argv[1])), sys.argv[2]
while not (paths.data / "go").exists():
    time.sleep(0.001)
previous = store.load(paths).account(name).oauth.refresh_token.reveal()
for n in range(60):
    # A write of the other process that started from an older read would bring `previous` back.
    seen = store.load(paths).account(name).oauth.refresh_token.reveal()
    assert seen == previous, (n, seen, previous)
    previous = f"rt-{name}-{n}"
    grants.save_refresh_token(paths, name, previous)
"""


def test_two_processes_saving_at_once_lose_nothing(paths: Paths) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "package"))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(paths.data), name], env=env,
                              stderr=subprocess.PIPE, text=True) for name in ("outlook", "zweites")]
    (paths.data / "go").touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    config = store.load(paths)
    # Each process re-read the file under the lock: neither overwrote the other's last token.
    assert config.account("outlook").oauth.refresh_token.reveal() == "rt-outlook-59"  # type: ignore[union-attr]
    assert config.account("zweites").oauth.refresh_token.reveal() == "rt-zweites-59"  # type: ignore[union-attr]
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600
