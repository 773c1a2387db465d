"""Fixtures of the lifecycle tests: a fake NAS (FakeDSM) and the built packages, extracted."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from support.synopkg import FakeDSM, Spk, extract_spk, python_for_package_user


@pytest.fixture(scope="module")
def py38() -> Path:
    """Python 3.8 runnable by the package user (DSM 7's interpreter version)."""
    python = python_for_package_user()
    if python is None:
        pytest.skip("no Python 3.8 here (python3.8 on PATH, pyenv, or $SMARTPOP_PY38): lifecycle tests need it")
    return python


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temp dir the unprivileged package user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="smartpop-nas-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dsm(world_tmp: Path, py38: Path) -> Iterator[FakeDSM]:
    """A fresh fake NAS; any daemon left running is stopped afterwards."""
    nas = FakeDSM(world_tmp / "nas", py38)
    yield nas
    if nas.installed is not None:
        nas.stop()


@pytest.fixture
def spk(built_spk: Path, world_tmp: Path) -> Spk:
    """The built package, extracted like DSM's pkginstall dir."""
    return extract_spk(built_spk, world_tmp / "pkginstall")


@pytest.fixture
def spk_v2(built_spk_v2: Path, world_tmp: Path) -> Spk:
    """The higher-version build, extracted."""
    return extract_spk(built_spk_v2, world_tmp / "pkginstall2")
