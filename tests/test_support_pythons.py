"""tests/support/pythons.py: which Python 3.8 the NAS-like tests run, without a machine's path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from support import pythons


@pytest.fixture(autouse=True)
def fresh_lookup() -> Iterator[None]:
    """The finder caches its answer per process; each test asks afresh and leaves no answer behind."""
    pythons.python38_home.cache_clear()
    yield
    pythons.python38_home.cache_clear()


def test_patch_releases_sort_by_number() -> None:
    newer = pythons._version(Path("/p/versions/3.8.18/bin/python3.8"))
    older = pythons._version(Path("/p/versions/3.8.9/bin/python3.8"))
    assert newer > older


def test_the_named_interpreter_is_the_only_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTPOP_PY38", sys.executable)
    home = pythons.python38_home()
    if sys.version_info[:2] == (3, 8):
        # A venv's interpreter leads back to the plain installation it was made from.
        assert home == Path(sys.base_prefix)
        assert pythons.python38() == Path(sys.base_prefix) / "bin" / "python3.8"
    else:
        assert home is None, "a Python that is not 3.8 is never taken, and nothing else is tried"


def test_a_missing_named_interpreter_finds_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMARTPOP_PY38", str(tmp_path / "no-python"))
    assert pythons.python38() is None


def test_pyenv_versions_are_searched_newest_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SMARTPOP_PY38", raising=False)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    for version in ("3.8.9", "3.8.18", "3.9.1"):
        binary = tmp_path / "versions" / version / "bin" / "python3.8"
        binary.parent.mkdir(parents=True)
        binary.touch()
    listed = pythons._candidates()[1:]
    assert listed == [str(tmp_path / "versions" / v / "bin" / "python3.8") for v in ("3.8.18", "3.8.9")]
