"""The packaged UI end to end: the built .spk's launcher serves on DSM's Python 3.8 behind its own CGI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from webrig import CgiHost, FakeDsm

from support.ports import free_ports
from support.pythons import python38
from support.synopkg import SAFE_EXTRACT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target(built_spk: Path) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="spt", dir="/tmp"))
    with tarfile.open(built_spk, "r:") as spk:
        spk.extract("package.tgz", root, **SAFE_EXTRACT)
    with tarfile.open(root / "package.tgz", "r:gz") as payload:
        payload.extractall(root / "target", **SAFE_EXTRACT)
    yield root / "target"
    shutil.rmtree(root, ignore_errors=True)


def test_packaged_backend_and_cgi_on_python38(target: Path) -> None:
    py38 = python38()
    if py38 is None:
        pytest.skip("needs a plain Python 3.8 like DSM 7's (python3.8 on PATH, pyenv, or $SMARTPOP_PY38)")
    root = Path(tempfile.mkdtemp(prefix="spb", dir="/tmp"))
    data = root / "var"
    data.mkdir(mode=0o700)
    port = free_ports(1)[0]
    (data / "config.json").write_text(json.dumps({"schema_version": 1, "accounts": [], "web": {"port": port}}))
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", "SMARTPOP_PYTHON": py38,
           "SYNOPKG_PKGVAR": str(data), "SYNOPKG_DSM_LANGUAGE": "ger"}
    proc = subprocess.Popen([str(target / "bin/smartpop"), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    dsm = FakeDsm(root)
    host = CgiHost(dsm, data, python=py38, ui_dir=target / "ui")
    try:
        deadline = time.monotonic() + 60
        while not (data / "web.secret").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        sid, token = dsm.login("admin")
        response = None
        while time.monotonic() < deadline:
            try:
                response = requests.get(host.url + "/", cookies={"id": sid}, headers={"X-Syno-Token": token},
                                        timeout=30)
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        assert response is not None and response.status_code == 200, response.text if response else "no answer"
        # No Accept-Language from this client: DSM's language (ger) decides.
        assert "Jetzt abholen" in response.text
        # Styles come from the package's ui/static, answered by DSM's web server without the CGI.
        found = re.search(r'href="(/webman/3rdparty/SmartPop/static/app\.css\?v=[0-9a-f]+)"', response.text)
        assert found, "the page links the stylesheet in ui/static"
        css = requests.get(f"http://127.0.0.1:{host.port}{found.group(1)}", timeout=30)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert css.content == (target / "smartpop" / "web" / "static" / "app.css").read_bytes()
        assert host.static_requests == ["/webman/3rdparty/SmartPop/static/app.css"]
        # The backend listens on its socket in DATA only: web.port stays closed.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert os.stat(data / "web.secret").st_mode & 0o777 == 0o600
    finally:
        host.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0
