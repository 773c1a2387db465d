"""The bundled runtime: package.tgz runs on Python 3.8 with nothing but the stdlib and lib/."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.pythons import python38
from support.synopkg import SAFE_EXTRACT

BUNDLED = ["flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker", "waitress", "requests",
           "urllib3", "idna", "charset_normalizer", "certifi", "filelock", "importlib_metadata", "zipp",
           "dns", "dns.resolver", "spf"]


@pytest.fixture(scope="module")
def target(built_spk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """package.tgz unpacked, as DSM's target dir."""
    root = tmp_path_factory.mktemp("target")
    with tarfile.open(built_spk, "r:") as spk:
        spk.extract("package.tgz", root, **SAFE_EXTRACT)
    with tarfile.open(root / "package.tgz", "r:gz") as payload:
        payload.extractall(root / "target", **SAFE_EXTRACT)
    return root / "target"


@pytest.fixture(scope="module")
def py38() -> Path:
    """DSM 7's interpreter version."""
    found = python38()
    if found is None:
        pytest.skip("no Python 3.8 (python3.8 on PATH, pyenv, or $SMARTPOP_PY38): the bundle test needs it")
    return found


def clean_env(**extra: str) -> dict:
    """An environment without any Python path or venv hints."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def test_launcher_help_on_python38(target: Path, py38: Path, tmp_path: Path) -> None:
    """bin/smartpop --help works on 3.8 with only the bundle."""
    proc = subprocess.run([str(target / "bin/smartpop"), "--help"], capture_output=True, text=True,
                          env=clean_env(SMARTPOP_PYTHON=str(py38), SMARTPOP_DATA=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    for command in ("serve", "fetch", "relay", "check", "status"):
        assert command in proc.stdout


def test_every_bundled_package_imports_on_python38(target: Path, py38: Path) -> None:
    """Each bundled library imports from lib/ (no site-packages: -I -S), MarkupSafe in pure Python."""
    code = (
        "import sys, importlib\n"
        f"sys.path[:0] = [{str(target / 'lib')!r}, {str(target)!r}]\n"
        f"names = {BUNDLED!r}\n"
        "for n in names:\n"
        "    m = importlib.import_module(n)\n"
        f"    assert m.__file__.startswith({str(target / 'lib')!r}), (n, m.__file__)\n"
        "import markupsafe; assert markupsafe.escape('<') == '&lt;'\n"
        "import smartpop.cli, smartpop.config.store, smartpop.web.server, smartpop.web.app\n"
        "import smartpop.health.service, smartpop.health.command\n"
        "print(sys.version_info[:2], 'ok')\n"
    )
    proc = subprocess.run([str(py38), "-I", "-S", "-c", code], capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3, 8) ok"


def test_launcher_refuses_a_too_old_interpreter(target: Path, tmp_path: Path) -> None:
    """SMARTPOP_PYTHON pointing at something that is not Python >= 3.8 is refused clearly."""
    fake = tmp_path / "python3.6"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.run([str(target / "bin/smartpop"), "--help"], capture_output=True, text=True,
                          env=clean_env(SMARTPOP_PYTHON=str(fake)))
    assert proc.returncode != 0
    assert "not a Python >= 3.8" in proc.stderr


def test_cli_exit_codes_through_the_launcher(target: Path, tmp_path: Path) -> None:
    """The shipped launcher passes the CLI's exit codes through (2: config error)."""
    env = clean_env(SMARTPOP_DATA=str(tmp_path))
    found = python38()
    if found is not None:
        env["SMARTPOP_PYTHON"] = str(found)
    proc = subprocess.run([str(target / "bin/smartpop"), "status"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "config.json does not exist" in proc.stdout
    assert os.path.isdir(tmp_path)
