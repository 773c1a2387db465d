"""`serve` loads Flask on the first web request, not at start (issue 14 §5: small in memory)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List

import pytest
from webrig import ROOT, unix_request

from support.ports import free_ports

# Everything the Flask app brings along; none of it may be imported before the first request.
WEB_ONLY = ("flask", "jinja2", "werkzeug", "itsdangerous", "click", "blinker", "markupsafe")


def _imported(importtime: Path) -> List[str]:
    """Top-level names of the modules the process has imported so far (from its -X importtime lines)."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", importtime.read_text(), re.MULTILINE)
    return sorted({name.split(".")[0] for name in names})


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"serve exited with {proc.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_serve_loads_the_web_app_on_the_first_request() -> None:
    root = Path(tempfile.mkdtemp(prefix="splz", dir="/tmp"))  # short: a Unix socket path has 107 bytes
    data = root / "data"
    data.mkdir(mode=0o700)
    # One account on a closed port: the collector's first pass (and its error path) runs before we look.
    doc = {"schema_version": 1, "local_domains": ["firma.test"], "fallback_recipient": "postmaster@firma.test",
           "accounts": [{"name": "lazy-probe", "protocol": "pop3", "host": "127.0.0.1", "port": free_ports(1)[0],
                         "security": "ssl", "username": "u", "password": "p", "interval": 3600}]}
    (data / "config.json").write_text(json.dumps(doc))
    (data / "config.json").chmod(0o600)
    importtime = root / "importtime.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "package")}
    env.pop("SMARTPOP_DATA", None)
    # -X importtime writes one line to stderr per module as it is first imported: a record of what
    # the process has loaded that needs no request, no signal and no code of the product.
    with importtime.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "smartpop", "--data", str(data), "serve"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    log = data / "smartpop.log"
    sock = data / "run" / "web.sock"
    try:
        _wait_for("the backend's socket", lambda: sock.exists() and "backend listening" in log.read_text(), proc)
        _wait_for("the collector's first pass", lambda: "lazy-probe" in log.read_text(), proc)
        time.sleep(1.0)
        before = _imported(importtime)
        assert "smartpop" in before and "waitress" in before  # the probe sees the process's imports
        assert [name for name in WEB_ONLY if name in before] == []
        assert (data / "web.secret").exists()  # index.cgi needs it before anyone opens the UI

        # Unauthenticated: the first request builds the app, which refuses it as before.
        status, text = unix_request(sock, "GET", "/")
        assert (status, text) == (403, "Forbidden\n")
        assert "flask" in _imported(importtime) and "jinja2" in _imported(importtime)

        secret = (data / "web.secret").read_text().strip()
        proof = {"X-SmartPop-Proof": secret, "X-SmartPop-User": "admin", "X-SmartPop-Session": "s"}
        status, text = unix_request(sock, "GET", "/accounts/", proof)
        assert status == 200 and "lazy-probe" in text and 'id="nav-accounts" class="active"' in text
        status, _text = unix_request(sock, "POST", "/accounts/lazy-probe/toggle", proof)
        assert status == 403  # no CSRF token
        assert log.read_text().count("web interface loaded") == 1
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0


class _Recorder:
    """A WSGI start_response that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def __call__(self, status: str, headers: List[Any], exc_info: Any = None) -> None:
        self.calls.append((status, dict(headers)))


def _hello(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_a_failed_build_answers_500_and_the_next_request_tries_again(caplog: pytest.LogCaptureFixture) -> None:
    from smartpop.web.server import LazyApp

    attempts: List[int] = []

    def build() -> Callable[..., Iterable[bytes]]:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("kaputt-42")
        return _hello

    app = LazyApp(build)
    first = _Recorder()
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/accounts/"}, first))
    assert first.calls[0][0] == "500 Internal Server Error"
    assert b"could not be started" in body and b"kaputt" not in body  # the why goes to the log only
    assert not app.loaded
    record = next(r for r in caplog.records if "could not be started" in r.getMessage())
    # Once smartpop's logging is set up (by an earlier test in the same process), its handler
    # folds the traceback into the escaped message text; either way the log holds the why.
    logged = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
    assert "GET /accounts/" in logged and "kaputt-42" in logged
    second = _Recorder()
    assert b"".join(app({}, second)) == b"hello" and second.calls[0][0] == "200 OK"
    assert app.loaded and len(attempts) == 2
    assert b"".join(app({}, _Recorder())) == b"hello" and len(attempts) == 2


def test_concurrent_first_requests_build_the_app_once() -> None:
    from smartpop.web.server import LazyApp

    started = threading.Event()
    attempts: List[int] = []

    def build() -> Callable[..., Iterable[bytes]]:
        attempts.append(1)
        started.set()
        time.sleep(0.3)  # the other requests arrive while this one builds
        return _hello

    app = LazyApp(build)
    bodies: List[bytes] = []

    def request() -> None:
        bodies.append(b"".join(app({}, _Recorder())))

    threads = [threading.Thread(target=request) for _ in range(4)]
    threads[0].start()
    started.wait(10)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert bodies == [b"hello"] * 4 and len(attempts) == 1


def test_a_missing_web_library_stops_serve_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartpop.errors import SmartPopError
    from smartpop.web import server

    server.require_web_libraries()  # all there in this environment
    monkeypatch.setattr(server, "WEB_LIBRARIES", ("flask", "smartpop_no_such_library"))
    with pytest.raises(SmartPopError, match=r"libraries are missing \(smartpop_no_such_library\)\. Fix: reinstall"):
        server.require_web_libraries()
