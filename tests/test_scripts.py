"""Static checks of the shell side: shellcheck, interpreter lists, generated wizards."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from support.build import ROOT

SHELL_FILES = [*sorted((ROOT / "scripts").iterdir()), ROOT / "package/bin/smartpop", ROOT / "build.sh",
               ROOT / ".ci/run", ROOT / "tests/run"]


def test_shellcheck_clean() -> None:
    """Every shell script passes shellcheck."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (tests/run installs it)")
    files = [str(p) for p in SHELL_FILES if p.exists()]
    proc = subprocess.run(["shellcheck", "-x", *files], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_interpreter_lists_match() -> None:
    """preinst checks the same interpreters the launcher may pick."""
    launcher = (ROOT / "package/bin/smartpop").read_text()
    installer = (ROOT / "scripts/installer").read_text()
    in_launcher = re.findall(r"(/\S+/python3(?:\.\d+)?)\b", launcher.split("for candidate in", 1)[1].split("; do")[0])
    in_installer = re.search(r'PYTHON_CANDIDATES="\$\{SMARTPOP_PYTHON_CANDIDATES:-([^}]*)\}"', installer)
    assert in_installer is not None
    assert in_launcher == in_installer.group(1).split()


def test_wizard_files_are_generated_from_the_definition() -> None:
    """WIZARD_UIFILES/* equal what tools/wizards.py renders (both languages, same keys)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import wizards
    finally:
        sys.path.pop(0)
    rendered = wizards.render()
    for name, text in rendered.items():
        assert (ROOT / "WIZARD_UIFILES" / name).read_text(encoding="utf-8") == text, f"regenerate {name}"
    keys = set(re.findall(r'"key": "(wizard_[a-z_]+)"', rendered["install_uifile"]))
    assert keys == set(re.findall(r'"key": "(wizard_[a-z_]+)"', rendered["install_uifile_ger"]))
    from smartpop.config.wizard import WIZARD_KEYS

    assert keys == set(WIZARD_KEYS)


def test_trampolines_are_identical() -> None:
    """The six DSM-named lifecycle scripts only dispatch into scripts/installer."""
    bodies = {(ROOT / "scripts" / s).read_text() for s in
              ("preinst", "postinst", "preuninst", "postuninst", "preupgrade", "postupgrade")}
    assert len(bodies) == 1
    assert 'run_phase "$(basename "$0")"' in bodies.pop()
