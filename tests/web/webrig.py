"""Test rig for the UI: a stand-in DSM (authenticate.cgi, login.cgi, group file), a web server that
runs ui/index.cgi the way DSM does, and the backend under waitress on its private Unix socket."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import requests

from smartpop.paths import Paths, ensure_data_dir
from support.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
CGI = ROOT / "ui" / "index.cgi"
SCRIPT_NAME = "/webman/3rdparty/SmartPop/index.cgi"
UI_URL = "/webman/3rdparty/SmartPop/"
# What build.sh copies into ui/static (the checkout has no ui/static of its own).
STATIC_SOURCE = ROOT / "package" / "smartpop" / "web" / "static"
MIME = {".css": "text/css", ".js": "application/javascript", ".png": "image/png"}

# authenticate.cgi stand-in: like DSM's, it prints the user of a valid session (cookie `id`)
# and nothing otherwise; with CSRF protection (the default here) it also insists on the
# session's SynoToken in QUERY_STRING. Every call is logged, so tests see what it was given.
AUTH_STUB = """#!{python}
import json, os, urllib.parse
state = json.load(open({sessions!r}))
with open({calls!r}, "a") as log:
    log.write(json.dumps({{k: os.environ.get(k, "") for k in ("QUERY_STRING", "HTTP_X_SYNO_TOKEN")}}) + "\\n")
cookies = dict(p.strip().split("=", 1) for p in os.environ.get("HTTP_COOKIE", "").split(";") if "=" in p)
query = dict(urllib.parse.parse_qsl(os.environ.get("QUERY_STRING", "")))
entry = state["sessions"].get(cookies.get("id", ""))
token_ok = not state["csrf"] or (entry is not None and query.get("SynoToken") == entry["token"])
if entry and token_ok and os.environ.get("REMOTE_ADDR"):
    print(entry["user"])
"""
# login.cgi stand-in, as index.cgi would find it on the NAS: a logged-in session learns its
# SynoToken. Each run is logged: the CGI must never run it (the browser asks DSM itself).
LOGIN_STUB = """#!{python}
import json, os
state = json.load(open({sessions!r}))
with open({runs!r}, "a") as log:
    log.write("run\\n")
cookies = dict(p.strip().split("=", 1) for p in os.environ.get("HTTP_COOKIE", "").split(";") if "=" in p)
entry = state["sessions"].get(cookies.get("id", ""))
print("Content-Type: application/json; charset=utf-8")
print()
print(json.dumps({{"success": True, "SynoToken": entry["token"]}} if entry else {{"success": False}}))
"""


class FakeDsm:
    """Sessions, tokens and the administrators group of a stand-in DSM."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sessions_file = root / "sessions.json"
        self.group_file = root / "group"
        self.auth_cgi = root / "authenticate.cgi"
        self.login_cgi = root / "login.cgi"
        self.auth_calls_file = root / "authenticate.calls"
        self.login_runs_file = root / "login.runs"
        self.sessions: Dict[str, Dict[str, str]] = {}
        self.admins: List[str] = ["admin"]
        self.csrf = True  # DSM's "improve protection against CSRF attacks"
        self._write()
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        for path, text in ((self.auth_cgi, AUTH_STUB), (self.login_cgi, LOGIN_STUB)):
            path.write_text(text.format(python=python, sessions=str(self.sessions_file),
                                        calls=str(self.auth_calls_file), runs=str(self.login_runs_file)))
            path.chmod(0o755)

    def _write(self) -> None:
        self.sessions_file.write_text(json.dumps({"sessions": self.sessions, "csrf": self.csrf}))
        self.group_file.write_text(
            "root:x:0:\nusers:x:100:admin,anna,bob\n"
            f"administrators:x:101:{','.join(self.admins)}\nhttp:x:1023:\n")

    def login(self, user: str) -> Tuple[str, str]:
        """Open a DSM session for `user`; return (cookie id, SynoToken)."""
        sid, token = secrets.token_urlsafe(16), secrets.token_urlsafe(12)
        self.sessions[sid] = {"user": user, "token": token}
        self._write()
        return sid, token

    def set_csrf_protection(self, on: bool) -> None:
        """Switch DSM's CSRF protection (authenticate.cgi then needs the SynoToken, or not)."""
        self.csrf = on
        self._write()

    def token_for(self, cookie_header: str) -> Optional[str]:
        """What DSM's /webman/login.cgi tells a browser with these cookies: its session's SynoToken."""
        cookies = dict(p.strip().split("=", 1) for p in cookie_header.split(";") if "=" in p)
        entry = self.sessions.get(cookies.get("id", ""))
        return entry["token"] if entry else None

    def auth_calls(self) -> List[Dict[str, str]]:
        """The QUERY_STRING and X-Syno-Token of every authenticate.cgi run, oldest first."""
        if not self.auth_calls_file.exists():
            return []
        return [json.loads(line) for line in self.auth_calls_file.read_text().splitlines() if line]

    def login_runs(self) -> int:
        """How often login.cgi ran on the server side."""
        if not self.login_runs_file.exists():
            return 0
        return len(self.login_runs_file.read_text().splitlines())


class _CgiHandler(BaseHTTPRequestHandler):
    """One request to the stand-in DSM web server: static ui/ files, DSM's login.cgi, or a run of ui/index.cgi."""

    host: CgiHost  # set on the subclass each CgiHost makes

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        host = self.host
        path, _, query = self.path.partition("?")
        if path.startswith(UI_URL) and not (path == SCRIPT_NAME or path.startswith(SCRIPT_NAME + "/")):
            host.static_requests.append(path)
            self._static(host.ui_file(path[len(UI_URL):]))
            return
        if path == "/webman/login.cgi":
            self._login_cgi()
            return
        if not (path == SCRIPT_NAME or path.startswith(SCRIPT_NAME + "/")):
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = host.cgi_env(self, path, query, body)
        host.calls.append(env)
        status, headers, payload = host.run_cgi(body, env)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _login_cgi(self) -> None:
        # DSM answers the browser itself (its own login.cgi, not the package's CGI).
        self.host.login_cgi_requests += 1
        token = self.host.dsm.token_for(self.headers.get("Cookie", ""))
        answer = {"success": True, "SynoToken": token} if token else {"success": False}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _static(self, file: Optional[Path]) -> None:
        if file is None or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", MIME.get(file.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _handle


class CgiHost:
    """A tiny HTTP server that executes ui/index.cgi per request, with DSM's CGI environment."""

    def __init__(self, dsm: FakeDsm, data: Path, python: str = sys.executable, ui_dir: Optional[Path] = None,
                 path_info: bool = True) -> None:
        self.port = free_ports(1)[0]
        self.dsm = dsm
        self.data = data
        self.python = python
        # Like DSM's web server, files under the ui dir are answered without running anything.
        self.ui_dir = ui_dir
        self.static_requests: List[str] = []
        self.path_info = path_info  # False: like a DSM that leaves PATH_INFO empty
        self.calls: List[Dict[str, str]] = []
        self.bodies: List[bytes] = []  # every answer the CGI gave, for the secrets check
        self.login_cgi_requests = 0  # browser requests of DSM's /webman/login.cgi
        handler = type("Handler", (_CgiHandler,), {"host": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def cgi_env(self, request: BaseHTTPRequestHandler, path: str, query: str, body: bytes) -> Dict[str, str]:
        """The CGI environment DSM's web server gives index.cgi for this request."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "nginx", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(self.port),
            "SERVER_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": request.client_address[0], "REQUEST_METHOD": request.command,
            "SCRIPT_NAME": SCRIPT_NAME, "QUERY_STRING": query,
            "REQUEST_URI": request.path, "CONTENT_LENGTH": str(len(body)) if body else "",
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "SMARTPOP_CGI_DATA": str(self.data), "SMARTPOP_AUTH_CGI": str(self.dsm.auth_cgi),
            # Where the CGI before the fix looked for login.cgi; the stub logs each run.
            "SMARTPOP_LOGIN_CGI": str(self.dsm.login_cgi), "SMARTPOP_GROUP_FILE": str(self.dsm.group_file),
        }
        if self.path_info:
            env["PATH_INFO"] = path[len(SCRIPT_NAME):]
        for name, value in request.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                env[key] = value
        return env

    def run_cgi(self, body: bytes, env: Dict[str, str]) -> Tuple[int, List[Tuple[str, str]], bytes]:
        """Run index.cgi once: (status, headers, payload) as the web server answers (500 if it failed)."""
        proc = subprocess.run([self.python, str(CGI)], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        if proc.returncode != 0 or not head:
            status, headers, payload = 500, [("Content-Type", "text/plain")], proc.stderr
        self.bodies.append(head + b"\r\n\r\n" + payload)
        return status, headers, payload

    def ui_file(self, relative: str) -> Optional[Path]:
        """The file DSM would serve for a URL under /webman/3rdparty/SmartPop/ (None: outside ui/)."""
        if not relative or ".." in relative.split("/"):
            return None
        if self.ui_dir is not None:
            return self.ui_dir / relative
        if relative.startswith("static/"):
            return STATIC_SOURCE / relative[len("static/"):]
        return ROOT / "ui" / relative

    @property
    def url(self) -> str:
        """The app's URL as DSM would open it."""
        return f"http://127.0.0.1:{self.port}{SCRIPT_NAME}"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


class Backend:
    """The real backend app under waitress on its Unix socket in DATA (as `smartpop serve` runs it)."""

    def __init__(self, paths: Paths) -> None:
        from smartpop.web.app import create_app
        from smartpop.web.server import make_server, socket_path

        self.app = create_app(paths)
        self.server = make_server(self.app, paths)
        self.socket = socket_path(paths)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    @property
    def jobs(self) -> Any:
        """The app's fetch-job registry."""
        return self.app.extensions["smartpop_jobs"]

    def stop(self) -> None:
        """Stop serving."""
        self.server.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (for tests that talk to the backend directly)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        """Connect to the socket file."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def unix_request(path: Path, method: str, target: str, headers: Optional[Dict[str, str]] = None,
                 body: bytes = b"") -> Tuple[int, str]:
    """One HTTP request over the Unix socket `path`: (status, body text)."""
    connection = UnixHTTPConnection(path)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace")
    finally:
        connection.close()


class Rig:
    """Everything one UI test needs: data dir + config, backend, CGI host, stand-in DSM."""

    def __init__(self, document: Dict[str, Any], web_port: Optional[int] = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="spw", dir="/tmp"))
        self.paths = Paths(self.root / "data")
        ensure_data_dir(self.paths)
        # web.port is only used by `serve --dev`; production must not touch it (squatting tests).
        self.backend_port = web_port or free_ports(1)[0]
        document = json.loads(json.dumps(document))
        document.setdefault("web", {})["port"] = self.backend_port
        self.write_config(document)
        self.dsm = FakeDsm(self.root)
        self.backend = Backend(self.paths)
        self.host = CgiHost(self.dsm, self.paths.data)

    def write_config(self, document: Dict[str, Any]) -> None:
        """Write config.json (mode 0600)."""
        self.paths.config.write_text(json.dumps(document))
        os.chmod(self.paths.config, 0o600)

    def config_document(self) -> Dict[str, Any]:
        """The stored config.json."""
        result: Dict[str, Any] = json.loads(self.paths.config.read_text())
        return result

    def stop(self) -> None:
        """Tear everything down."""
        self.host.stop()
        self.backend.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Browserless:
    """A requests session logged in to the stand-in DSM; remembers every response body.

    Like app.js it sends the session's SynoToken as X-Syno-Token on every request."""

    def __init__(self, rig: Rig, user: str = "") -> None:
        self.rig = rig
        self.http = requests.Session()
        self.bodies: List[str] = []
        self.token = ""
        if user:
            sid, self.token = rig.dsm.login(user)
            self.http.cookies.set("id", sid, domain="127.0.0.1", path="/")
            self.http.headers["X-Syno-Token"] = self.token

    def get(self, path: str, **kw: Any) -> requests.Response:
        """GET a path of the app through the CGI."""
        response = self.http.get(self.rig.host.url + path, allow_redirects=False, timeout=60, **kw)
        self.bodies.append(response.text)
        return response

    def post(self, path: str, data: Any = None, **kw: Any) -> requests.Response:
        """POST to a path of the app through the CGI."""
        response = self.http.post(self.rig.host.url + path, data=data, allow_redirects=False, timeout=60, **kw)
        self.bodies.append(response.text)
        return response

    def csrf(self) -> str:
        """This session's CSRF token, as a page shows it."""
        match = re.search(r'data-csrf="([0-9a-f]+)"', self.get("/").text)
        assert match, "the dashboard carries a CSRF token"
        return match.group(1)
