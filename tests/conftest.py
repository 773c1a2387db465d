"""Shared fixtures: a data dir with a valid config, the package source on sys.path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from smartpop import log as smartpop_log
from support.samples import sample_document


@pytest.fixture(autouse=True)
def _secrets_stay_with_their_test() -> Iterator[None]:
    """Each test's registered secrets end with it.

    The registry is process-wide by design; a test that registers a word-like value ("bad")
    would otherwise mask that word in every later test's log lines.
    """
    with smartpop_log._secrets_lock:
        before = set(smartpop_log._secrets)
    yield
    with smartpop_log._secrets_lock:
        smartpop_log._secrets.clear()
        smartpop_log._secrets.update(before)
        smartpop_log._by_length[:] = sorted(before, key=len, reverse=True)


ROOT = Path(__file__).resolve().parent.parent


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


def pytest_configure(config: pytest.Config) -> None:
    """Let the package side find a relay bundle built from this checkout (it shows the root command)."""
    import os

    from support.relay_bundle import built_bundle

    os.environ.setdefault("SMARTPOP_RELAY_BUNDLE", str(built_bundle()))
