"""index.cgi and its two trust questions: where the SynoToken comes from (the browser only, never
minted by the CGI) and whom the CGI hands the secret (the package user's socket only, never
whoever listens on web.port first)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from webrig import ROOT, Rig, unix_request

from support.ports import free_ports
from support.samples import sample_document

NOBODY = 65534


class Listener:
    """Someone else's server: accepts connections and records every byte sent to it."""

    def __init__(self, server: socket.socket) -> None:
        self.server = server
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.connections = 0
        self.received: List[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @classmethod
    def tcp(cls, port: int) -> Listener:
        """Bind 127.0.0.1:port first, as a local account could at boot, upgrade or restart."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        return cls(server)

    @classmethod
    def unix(cls, path: Path) -> Listener:
        """Listen on a Unix socket file."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        return cls(server)

    def _run(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(1.0)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 29\r\n\r\n"
                             b'{"ok": true, "user": "squat"}')
            except OSError:
                pass
            finally:
                self.received.append(data)
                conn.close()

    def stop(self) -> None:
        """Stop listening."""
        self.running = False
        self.thread.join(timeout=5)
        self.server.close()


def _last_auth_call(rig: Rig) -> dict:
    calls = rig.dsm.auth_calls()
    assert calls, "authenticate.cgi ran"
    return calls[-1]


def test_no_token_from_the_browser_means_none_for_authenticate_cgi(rig: Rig) -> None:
    sid, _token = rig.dsm.login("admin")
    # A page request without a token: no user, and a page that fetches the token in the browser.
    response = requests.get(rig.host.url + "/", cookies={"id": sid}, timeout=60)
    assert response.status_code == 401
    assert "sign in to DSM" in response.text and "sammelpostfach" not in response.text
    assert '"/webman/login.cgi"' in response.text and "SynoToken" in response.text
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", response.headers["Content-Security-Policy"])
    call = _last_auth_call(rig)
    assert "SynoToken" not in call["QUERY_STRING"] and call["HTTP_X_SYNO_TOKEN"] == ""
    # A POST (a forged cross-site form) without a token: plain 401, nothing changes.
    before = rig.paths.config.read_bytes()
    response = requests.post(rig.host.url + "/accounts/sammelpostfach/toggle", data={"csrf_token": "x"},
                             cookies={"id": sid}, timeout=60)
    assert response.status_code == 401 and "/webman/login.cgi" not in response.text
    assert rig.paths.config.read_bytes() == before
    # A token the browser sent that DSM does not accept: plain 401 too (no reload loop).
    response = requests.get(rig.host.url + "/?SynoToken=wrong", cookies={"id": sid}, timeout=60)
    assert response.status_code == 401 and "/webman/login.cgi" not in response.text
    # With DSM's CSRF protection off, authenticate.cgi needs no token and gets none.
    rig.dsm.set_csrf_protection(False)
    response = requests.get(rig.host.url + "/api/ping", cookies={"id": sid}, timeout=60)
    assert response.status_code == 200 and response.json()["user"] == "admin"
    call = _last_auth_call(rig)
    assert "SynoToken" not in call["QUERY_STRING"] and call["HTTP_X_SYNO_TOKEN"] == ""
    # Never did the CGI ask login.cgi for a token on the browser's behalf.
    assert rig.dsm.login_runs() == 0


def test_the_browsers_token_reaches_authenticate_cgi(rig: Rig) -> None:
    sid, token = rig.dsm.login("admin")
    cookies = {"id": sid}
    # Header X-Syno-Token (what app.js sends with fetch()).
    response = requests.get(rig.host.url + "/api/ping", headers={"X-Syno-Token": token}, cookies=cookies,
                            timeout=60)
    assert response.status_code == 200 and response.json()["user"] == "admin"
    call = _last_auth_call(rig)
    assert parse_qs(call["QUERY_STRING"])["SynoToken"] == [token] and call["HTTP_X_SYNO_TOKEN"] == token
    # (fetch() keeps its header on redirects: a page fetched that way needs no token in its URLs.)
    page = requests.get(rig.host.url + "/", headers={"X-Syno-Token": token}, cookies=cookies, timeout=60)
    assert page.status_code == 200 and "SynoToken=" not in page.text
    # Query SynoToken (links, GET forms, the page's first load).
    page = requests.get(rig.host.url + f"/?SynoToken={token}", cookies=cookies, timeout=60)
    assert page.status_code == 200 and "Fetch now" in page.text
    assert parse_qs(_last_auth_call(rig)["QUERY_STRING"])["SynoToken"] == [token]
    # The page's own URLs through the CGI carry it (a link cannot send a header) ...
    assert f"/webman/3rdparty/SmartPop/index.cgi/accounts/?SynoToken={token}" in page.text
    # ... styles and scripts come from ui/static, which DSM serves itself: no CGI, so no token
    # (issue 13 §1), and the file as DSM would hand it out.
    for name in ("app.js", "app.css"):
        found = re.search(r'"(/webman/3rdparty/SmartPop/static/' + re.escape(name) + r'\?v=[0-9a-f]+)"', page.text)
        assert found and "SynoToken" not in found.group(1)
        assert f"index.cgi/static/{name}" not in page.text
        assert requests.get(f"http://127.0.0.1:{rig.host.port}{found.group(1)}", timeout=60).status_code == 200
    # A POST form: the page puts the token into the action's query (authenticate.cgi reads the
    # query, not the body); the redirect after it keeps the token for the next page load.
    match = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
    assert match
    response = requests.post(rig.host.url + f"/accounts/sammelpostfach/toggle?SynoToken={token}",
                             data={"csrf_token": match.group(1)}, cookies=cookies, allow_redirects=False,
                             timeout=60)
    assert response.status_code == 302
    assert parse_qs(_last_auth_call(rig)["QUERY_STRING"])["SynoToken"] == [token]
    assert json.loads(rig.paths.config.read_text())["accounts"][0]["enabled"] is False
    location = urlsplit(response.headers["Location"])
    assert location.path == "/webman/3rdparty/SmartPop/index.cgi/accounts/"
    assert parse_qs(location.query)["SynoToken"] == [token]
    follow = requests.get(f"http://127.0.0.1:{rig.host.port}{response.headers['Location']}", cookies=cookies,
                          timeout=60)
    assert follow.status_code == 200 and "sammelpostfach" in follow.text
    assert rig.dsm.login_runs() == 0


def test_a_port_squatter_gets_nothing() -> None:
    """Whoever binds 127.0.0.1:web.port first (boot, upgrade, restart) sees no proof, no user name
    and no form body, and the CGI still reaches the real backend."""
    port = free_ports(1)[0]
    squatter = Listener.tcp(port)
    rig = Rig(sample_document(), web_port=port)
    try:
        secret = rig.paths.web_secret.read_text().strip()
        sid, token = rig.dsm.login("admin")
        headers = {"X-Syno-Token": token}
        response = requests.get(rig.host.url + "/api/ping", headers=headers, cookies={"id": sid}, timeout=60)
        assert response.status_code == 200 and response.json() == {"ok": True, "user": "admin"}
        page = requests.get(rig.host.url + "/routing/", headers=headers, cookies={"id": sid}, timeout=60)
        match = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
        assert page.status_code == 200 and match
        response = requests.post(rig.host.url + "/routing/explain", headers=headers, cookies={"id": sid},
                                 data={"csrf_token": match.group(1), "headers": "To: geheim-body@firma.de\n"},
                                 timeout=60)
        # The real backend answered (it shows the pasted headers again).
        assert response.status_code != 502 and "geheim-body@firma.de" in response.text
        time.sleep(0.3)
    finally:
        squatter.stop()
        rig.stop()
    assert squatter.connections == 0, "the CGI connected to the squatted port"
    everything = b"".join(squatter.received)
    for leak in (secret.encode(), b"X-SmartPop", b"admin", b"geheim-body"):
        assert leak not in everything


def _ping(rig: Rig) -> requests.Response:
    sid, token = rig.dsm.login("admin")
    return requests.get(rig.host.url + "/api/ping", headers={"X-Syno-Token": token}, cookies={"id": sid},
                        timeout=60)


def test_the_cgi_only_talks_to_the_package_users_socket(rig: Rig) -> None:
    run = rig.paths.data / "run"
    sock = run / "web.sock"
    real = run / "web.sock.real"
    assert _ping(rig).status_code == 200
    elsewhere = Path(tempfile.mkdtemp(prefix="spsq", dir="/tmp"))
    evil = Listener.unix(elsewhere / "evil.sock")
    try:
        # A planted symlink to someone's socket (even one of the same uid) is refused.
        os.rename(sock, real)
        os.symlink(elsewhere / "evil.sock", sock)
        response = _ping(rig)
        assert response.status_code == 502 and "not running" in response.text
        os.unlink(sock)
        os.rename(real, sock)
        assert _ping(rig).status_code == 200
        # Directories others could write to (they could swap the socket) are refused.
        for directory, mode in ((run, 0o770), (rig.paths.data, 0o777)):
            original = stat.S_IMODE(os.stat(directory).st_mode)
            os.chmod(directory, mode)
            try:
                assert _ping(rig).status_code == 502
            finally:
                os.chmod(directory, original)
            assert _ping(rig).status_code == 200
        if os.geteuid() == 0:
            # A socket file of another user is refused before connecting.
            os.rename(sock, real)
            other = Listener.unix(sock)
            os.chown(sock, NOBODY, NOBODY)
            try:
                assert _ping(rig).status_code == 502
            finally:
                other.stop()
                os.unlink(sock)
            assert other.connections == 0
            os.rename(real, sock)
            assert _ping(rig).status_code == 200
    finally:
        evil.stop()
        shutil.rmtree(elsewhere, ignore_errors=True)
    assert evil.connections == 0 and not any(evil.received)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a listener as another user")
def test_the_cgi_checks_who_listens_on_the_socket(rig: Rig) -> None:
    """A socket file that looks right (moved in, chowned) but is served by another uid gets nothing."""
    run = rig.paths.data / "run"
    sock = run / "web.sock"
    elsewhere = Path(tempfile.mkdtemp(prefix="spsq", dir="/tmp"))
    os.chmod(elsewhere, 0o777)
    script = ("import socket, sys\n"
              "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
              "print('ready', flush=True)\n"
              "c, _ = s.accept(); c.settimeout(3)\n"
              "data = b''\n"
              "try:\n"
              "    while True:\n"
              "        chunk = c.recv(65536)\n"
              "        if not chunk: break\n"
              "        data += chunk\n"
              "except OSError: pass\n"
              "print(len(data), flush=True)\n")
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.Popen([python, "-c", script, str(elsewhere / "other.sock")], stdout=subprocess.PIPE,
                            text=True, preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.rename(sock, run / "web.sock.real")
        shutil.move(str(elsewhere / "other.sock"), str(sock))
        os.chown(sock, os.stat(rig.paths.data).st_uid, -1, follow_symlinks=False)
        response = _ping(rig)
        assert response.status_code == 502
        out, _ = proc.communicate(timeout=30)
        assert out.strip() == "0", "the CGI sent bytes to a listener of another uid"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if (run / "web.sock.real").exists():
            if sock.exists() or sock.is_symlink():
                sock.unlink()
            os.rename(run / "web.sock.real", sock)
        shutil.rmtree(elsewhere, ignore_errors=True)
    assert _ping(rig).status_code == 200


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="spsock", dir="/tmp"))
    data = root / "var"
    data.mkdir(mode=0o700)
    yield data
    shutil.rmtree(root, ignore_errors=True)


def _start_serve(data: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "package")}
    return subprocess.Popen([sys.executable, "-m", "smartpop", "--data", str(data), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def _wait_socket(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve ended: {proc.stderr.read() if proc.stderr else ''}")
        if path.exists():
            try:
                if unix_request(path, "GET", "/api/ping")[0] == 403:
                    return
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {path}")


def _stop(proc: subprocess.Popen[str]) -> Optional[int]:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def test_serve_listens_on_a_private_socket_and_not_on_web_port(data_dir: Path) -> None:
    port = free_ports(1)[0]
    (data_dir / "config.json").write_text(json.dumps({"schema_version": 1, "accounts": [], "web": {"port": port}}))
    path = data_dir / "run" / "web.sock"
    proc = _start_serve(data_dir)
    try:
        _wait_socket(path, proc)
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_uid == os.geteuid()
        assert stat.S_IMODE(os.stat(data_dir / "run").st_mode) == 0o700
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        secret = (data_dir / "web.secret").read_text().strip()
        status, text = unix_request(path, "GET", "/api/ping", {"X-SmartPop-Proof": secret, "X-SmartPop-User": "admin"})
        assert status == 200 and json.loads(text)["user"] == "admin"
        # A second backend must not steal the live socket.
        second = _start_serve(data_dir)
        assert second.wait(timeout=60) == 2
        assert second.stderr is not None and "already listening" in second.stderr.read()
        assert unix_request(path, "GET", "/api/ping")[0] == 403
    finally:
        assert _stop(proc) == 0
    assert not path.exists(), "a clean stop removes the socket"

    # A stale socket (a crashed run) is cleared at start.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    proc = _start_serve(data_dir)
    try:
        _wait_socket(path, proc)
    finally:
        assert _stop(proc) == 0

    # Anything else at the socket's place is not ours to delete: serve refuses and says where.
    path.write_text("not a socket")
    proc = _start_serve(data_dir)
    assert proc.wait(timeout=60) == 2
    assert proc.stderr is not None and str(path) in proc.stderr.read()
    assert path.read_text() == "not a socket"
