"""The README's "Try it locally", command by command, on the built .spk: the fetch succeeds and mail arrives."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> List[str]:
    """The lines of the first sh block under '## Try it locally'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Try it locally"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="smartpop-readme-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=str(cwd), capture_output=True,
                          text=True, timeout=120, check=False)


def test_readme_try_it_locally_fetches_end_to_end(built_spk: Path, workdir: Path) -> None:
    commands = readme_commands()
    assert commands[0] == "./build.sh"  # built once per session instead: the built_spk fixture
    serve_at = next(i for i, line in enumerate(commands) if " serve --dev" in line)
    assert "devstack.pid" in commands[-1] and serve_at == len(commands) - 2
    # The README's relative paths: dist/ holds the .spk, tools/ the devstack.
    (workdir / "dist").mkdir()
    shutil.copy(built_spk, workdir / "dist" / built_spk.name)
    shutil.copytree(ROOT / "tools", workdir / "tools")
    state = workdir / "state"
    before = "\n".join(commands[1:serve_at])
    # Every line runs as written; afterwards $D is kept for the next steps.
    result = _bash(before + f'\necho "$D" > {state}', workdir)
    base = Path(state.read_text().strip()) if state.exists() else None
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "devstack: ready" in out
        assert "demo: 3 collected, 1 to fallback, 0 waiting" in out
        assert "anna@firma.de\nben@firma.de\npostmaster@firma.de\n" in out
        assert "[UNKNOWN] DSM version: not on a DSM NAS" in out
        assert base is not None
        for rcpt, subject in (("anna@firma.de", "Hello Anna"), ("ben@firma.de", "Hello Ben"),
                              ("postmaster@firma.de", "For the fallback mailbox")):
            files = list((base / "delivered" / rcpt).glob("*.eml"))
            assert len(files) == 1 and f"Subject: {subject}" in files[0].read_text()
        assert list((base / "provider").iterdir()) == []  # deleted at the provider after the 250
        fetch = next(line for line in commands if " fetch" in line)
        again = _bash(fetch.split("#")[0].replace("$D", str(base)), workdir)
        assert again.returncode == 0 and "demo: 0 collected" in again.stdout
        _serve_dev(commands[serve_at], base, workdir)
    finally:
        if base is not None:
            stop = _bash(commands[-1].replace("$D", str(base)), workdir)
            assert stop.returncode == 0, stop.stderr


def _serve_dev(line: str, base: Path, cwd: Path) -> None:
    """`serve --dev` prints a login URL that gets the browser into the app; stopped with SIGTERM."""
    command = line.split("#")[0].replace('"$D', f'"{base}')
    proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=str(cwd), stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        while time.monotonic() < deadline and not url:
            found = re.search(r"open (http://127\.0\.0\.1:\d+/_dev/login\?token=\S+)", proc.stderr.readline())
            url = found.group(1) if found else ""
        assert url, "serve --dev printed no login URL"
        page = requests.get(url, timeout=30)
        assert page.status_code == 200 and "demo" in page.text
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
