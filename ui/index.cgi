#!/usr/bin/python3 -IS
"""SmartPop's DSM entry point: check the DSM session, require `administrators`, proxy to the backend.

DSM serves this file as /webman/3rdparty/SmartPop/index.cgi. It runs on DSM's own Python 3.8
with the standard library only. The browser never sees the shared secret: the CGI reads it
from the package's data dir and adds it (with the DSM user name) to the proxied request.
Every X-SmartPop-* header the browser sends is dropped, so it cannot be forged from outside.

The backend listens on DATA/run/web.sock, not on a TCP port (any local account could bind a
free port first and collect the secret). Before sending anything the CGI checks that the data
dir and DATA/run cannot be written by others and that web.sock is a socket (not a symlink)
owned by the data dir's owner, and after connecting that the listening process runs as that
user (SO_PEERCRED).

SynoToken (DSM's CSRF token, needed by authenticate.cgi when "improve protection against
cross-site request forgery" is on) comes only from the browser: header X-Syno-Token or
query SynoToken. The CGI never asks login.cgi for one: a token minted on the server for
whatever request arrives would switch DSM's CSRF check off for this app. A page request
without a token gets a small page that fetches the token in the browser from
/webman/login.cgi (or takes it from the DSM window) and loads the page again with
?SynoToken=…. How others do it:
- tailscale/tailscale client/web/synology.go and cmd/tailscale/cli/web.go (synoTokenRedirect):
  no token in header/query/form -> page that GETs /webman/login.cgi and reloads with
  ?SynoToken=; authenticate.cgi then runs with the CGI's environment.
- duplicati/duplicati Installer/Synology/web-extra/package/ngax/package.js: token from
  SYNO.SDS.Session.SynoToken of the DSM (parent) window, else GET /webman/login.cgi, sent as
  X-Syno-Token; its nph-proxy.cgi hands a header token to authenticate.cgi as
  QUERY_STRING=SynoToken=… (what this CGI does too, plus HTTP_X_SYNO_TOKEN).
- toafez/DSM7DemoSPK ui/index.cgi runs login.cgi on the server (REQUEST_METHOD=GET trick, the
  package user must join group `system`): the pattern this CGI no longer follows.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import struct
import subprocess
import sys
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Overridable for tests only; a browser cannot set these (request headers arrive as HTTP_*).
DATA = os.environ.get("SMARTPOP_CGI_DATA", "/var/packages/SmartPop/var")
AUTH_CGI = os.environ.get("SMARTPOP_AUTH_CGI", "/usr/syno/synoman/webman/modules/authenticate.cgi")
GROUP_FILE = os.environ.get("SMARTPOP_GROUP_FILE", "/etc/group")
ADMIN_GROUP = "administrators"
# Same names as smartpop/web/server.py (SOCKET_DIR, SOCKET_NAME).
SOCKET_DIR = "run"
SOCKET_NAME = "web.sock"
MAX_BODY = 2 * 1024 * 1024
MAX_ANSWER = 64 * 1024 * 1024
TIMEOUT = 120.0

# Request headers worth passing on; everything else (cookies, X-SmartPop-*) stays here.
FORWARD_REQUEST = ["Content-Type", "Accept", "Accept-Language", "X-SmartPop-CSRF"]
FORWARD_RESPONSE = ["Content-Type", "Location", "Cache-Control", "Content-Security-Policy",
                    "X-Content-Type-Options", "Referrer-Policy", "Content-Disposition"]
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,256}$")
_USER = re.compile(r"^[^\x00-\x1f\x7f:/]{1,128}$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/@%+-]*$")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>SmartPop</title></head>
<body style="font-family:sans-serif;margin:40px;color:#1f2d3d"><h1>SmartPop</h1>
<p>{en}</p><p lang="de">{de}</p>{script}</body></html>
"""
# Served (only) to a page request that brought no SynoToken: take the token from the DSM window
# that opened the app, else ask DSM's /webman/login.cgi from the browser (same origin, so no other
# site can read the answer), then load the same URL again with ?SynoToken=. A request that
# brings a token never gets this page, so a token DSM does not accept cannot cause a loop.
BOOTSTRAP_JS = """(function () {
  "use strict";
  function fromDsm() {
    var windows = [window.parent, window.opener];
    for (var i = 0; i < windows.length; i++) {
      try {
        var w = windows[i];
        var t = w && w !== window && w.SYNO && w.SYNO.SDS && w.SYNO.SDS.Session && w.SYNO.SDS.Session.SynoToken;
        if (typeof t === "string" && t) { return Promise.resolve(t); }
      } catch (e) { /* a window of another origin is not DSM */ }
    }
    return fetch("/webman/login.cgi", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (d) { return d && typeof d.SynoToken === "string" ? d.SynoToken : ""; });
  }
  fromDsm().then(function (token) {
    if (!token) { return; }
    var url = new URL(window.location.href);
    url.searchParams.set("SynoToken", token);
    window.location.replace(url.toString());
  }).catch(function () { /* no DSM session: the message above stays */ });
})();"""
MESSAGES = {
    401: ("Please sign in to DSM first, then open SmartPop from the DSM desktop.",
          "Bitte melden Sie sich zuerst an DSM an und öffnen Sie SmartPop dann vom DSM-Desktop."),
    403: ("SmartPop is available to DSM administrators only.",
          "SmartPop steht nur DSM-Administratoren zur Verfügung."),
    502: ("The SmartPop service is not running. Start it in Package Center.",
          "Der SmartPop-Dienst läuft nicht. Starten Sie ihn im Paket-Zentrum."),
    400: ("This request is not valid.", "Diese Anfrage ist ungültig."),
}
REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
           307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           413: "Payload Too Large", 422: "Unprocessable Entity", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


class Untrusted(OSError):
    """The backend socket (or its directory) is not provably the package user's."""


def respond(status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
    """Write a CGI response."""
    out = sys.stdout.buffer
    lines = [f"Status: {status} {REASONS.get(status, '')}".rstrip()]
    lines += [f"{name}: {value}" for name, value in headers]
    out.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
    out.write(body)
    out.flush()


def refuse(status: int, fetch_token: bool = False) -> None:
    """Answer with a small page that reveals nothing about the app (plus, if asked, the token script)."""
    en, de = MESSAGES[status]
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")]
    script = ""
    if fetch_token:
        import base64  # only this page needs it: every import costs start-up time on a small NAS

        script = f"<script>{BOOTSTRAP_JS}</script>"
        digest = base64.b64encode(hashlib.sha256(BOOTSTRAP_JS.encode("utf-8")).digest()).decode("ascii")
        headers.append(("Content-Security-Policy", f"default-src 'none'; script-src 'sha256-{digest}'; "
                        "connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'"))
    respond(status, headers, PAGE.format(en=en, de=de, script=script).encode("utf-8"))


def _run(program: str, env: Mapping[str, str]) -> str:
    """Run a DSM helper CGI and return its stdout ('' if it is missing or fails)."""
    if not os.path.isfile(program):
        return ""
    try:
        proc = subprocess.run([program], env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.decode("utf-8", "replace")


def syno_token(env: Mapping[str, str]) -> Tuple[str, bool, bool]:
    """The SynoToken the browser sent (header X-Syno-Token or query SynoToken), whether it sent one,
    and whether it came in the URL."""
    given = env.get("HTTP_X_SYNO_TOKEN", "")
    in_url = False
    if not given:
        given = dict(parse_qsl(env.get("QUERY_STRING", ""))).get("SynoToken", "")
        in_url = bool(given)
    return (given if _TOKEN.match(given) else ""), bool(given), in_url


def dsm_user(env: Mapping[str, str], token: str) -> str:
    """The DSM user of this session according to authenticate.cgi, or ''."""
    auth_env = {k: v for k, v in env.items() if k != "HTTP_X_SYNO_TOKEN"}
    query = [(k, v) for k, v in parse_qsl(env.get("QUERY_STRING", ""), keep_blank_values=True) if k != "SynoToken"]
    if token:
        # authenticate.cgi reads the token from QUERY_STRING; DSM's own requests also carry the header.
        query.append(("SynoToken", token))
        auth_env["HTTP_X_SYNO_TOKEN"] = token
    auth_env["QUERY_STRING"] = urlencode(query)
    lines = [line.strip() for line in _run(AUTH_CGI, auth_env).splitlines() if line.strip()]
    user = lines[-1] if lines else ""
    return user if _USER.match(user) else ""


def is_admin(user: str) -> bool:
    """Whether `user` is a member of the `administrators` group."""
    try:
        with open(GROUP_FILE, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 4 and parts[0] == ADMIN_GROUP:
                    return user in [m.strip() for m in parts[3].split(",") if m.strip()]
    except OSError:
        return False
    return False


def _private_dir(path: str, owner: int) -> None:
    """Refuse a directory that is a symlink, has another owner, or that others may write to."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o022:
        raise Untrusted(f"{path} is not a directory of uid {owner} closed to others")


def backend_socket() -> Tuple[str, int]:
    """The backend's socket path and the package user's uid, once nobody else can have put it there."""
    data = os.path.realpath(DATA)
    owner = os.stat(data).st_uid
    _private_dir(data, owner)
    directory = os.path.join(data, SOCKET_DIR)
    _private_dir(directory, owner)
    path = os.path.join(directory, SOCKET_NAME)
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != owner:
        raise Untrusted(f"{path} is not a socket of uid {owner}")
    return path, owner


def _peer_uid(sock: socket.socket) -> Optional[int]:
    """The uid of the process listening at the other end (Linux SO_PEERCRED), or None elsewhere."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, size))
    return int(uid)


def exchange(socket_path: str, uid: int, method: str, target: str, headers: Mapping[str, str],
             body: bytes) -> Tuple[int, List[Tuple[str, str]], bytes]:
    """One HTTP/1.0 request to the backend, once the listener is known to run as the package user.

    Hand-written instead of http.client: that module (with email and ssl) took a third of the
    CGI's start-up (bench/cgi.py). HTTP/1.0 + Connection: close makes waitress send a plain body
    and close the socket, so the answer ends at EOF."""
    lines = [f"{method} {target} HTTP/1.0", "Host: localhost", "Connection: close"]
    for name, value in headers.items():
        if any(c in value for c in "\r\n\x00"):
            raise ValueError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    chunks: List[bytes] = []
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(socket_path)
        peer = _peer_uid(sock)
        if peer is not None and peer != uid:
            raise Untrusted(f"{socket_path} is served by uid {peer}, not {uid}")
        sock.sendall(request)
        size = 0
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > MAX_ANSWER:
                raise OSError("the backend's answer is too large")
    finally:
        sock.close()
    head, found, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not found or not version.startswith("HTTP/") or not code.isdigit():
        raise OSError("the backend did not answer in HTTP")
    answer = []
    for line in header_lines:
        name, colon, value = line.partition(":")
        if colon:
            answer.append((name.strip(), value.strip()))
    if method == "HEAD":
        payload = b""
    return int(code), answer, payload


def read_secret() -> str:
    """The shared secret (web.secret)."""
    with open(os.path.join(DATA, "web.secret"), encoding="ascii") as handle:
        return handle.read().strip()


def session_digest(env: Mapping[str, str]) -> str:
    """A digest of the DSM session (cookie `id`), binding the app's CSRF tokens to it."""
    cookies: Dict[str, str] = {}
    for part in env.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    # Not the SynoToken: a page served before the browser had one must keep working after.
    material = cookies.get("id") or env.get("HTTP_COOKIE", "")
    return hashlib.sha256(f"{material}|".encode()).hexdigest()[:32]


def app_path(env: Mapping[str, str]) -> str:
    """The path inside the app: PATH_INFO, else REQUEST_URI minus SCRIPT_NAME and the query.

    DSM's web server does not always set PATH_INFO for a 3rdparty CGI; the request line still
    carries the whole path (issue 13 §1). REQUEST_URI stays percent-encoded, which is what the
    backend's request line wants anyway."""
    path = env.get("PATH_INFO", "")
    if path:
        return path
    uri = env.get("REQUEST_URI", "").split("?", 1)[0].split("#", 1)[0]
    script = env.get("SCRIPT_NAME", "")
    if script and (uri == script or uri.startswith(script + "/")):
        return uri[len(script):]
    return ""


def request_target(env: Mapping[str, str]) -> Optional[str]:
    """Path and query for the backend (SynoToken removed), or None if the path is odd."""
    path = app_path(env) or "/"
    if not _PATH.match(path) or "/../" in path + "/":
        return None
    query = [(k, v) for k, v in parse_qsl(env.get("QUERY_STRING", ""), keep_blank_values=True) if k != "SynoToken"]
    return path + ("?" + urlencode(query) if query else "")


def local_location(location: str, script: str) -> str:
    """A backend redirect as a path under the app: never the backend's own http://localhost/… URL.

    Werkzeug answers a missing trailing slash with an absolute URL built from the Host the CGI
    sent; the browser must stay on DSM's origin and go through this CGI again."""
    parts = urlsplit(location)
    path = parts.path or "/"
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("http", "https") or parts.hostname not in ("localhost", "127.0.0.1"):
            return script + "/"  # never send the admin elsewhere on the backend's word
    if not path.startswith("/"):
        return location  # relative: the browser resolves it against the app's own URL
    if script and not (path == script or path.startswith(script + "/")):
        path = script + path
    return urlunsplit(("", "", path, parts.query, parts.fragment))


def keep_token(location: str, token: str, script: str) -> str:
    """A redirect inside the app keeps the browser's SynoToken (the next page load needs it too)."""
    parts = urlsplit(location)
    inside = parts.path == script or parts.path.startswith(script + "/")
    if not token or not script or parts.scheme or parts.netloc or not inside:
        return location
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "SynoToken"]
    query.append(("SynoToken", token))
    return urlunsplit(("", "", parts.path, urlencode(query), parts.fragment))


def proxy(env: Mapping[str, str], user: str, url_token: str) -> None:
    """Forward the request to the backend with the proof, and relay its answer.

    `url_token` is the SynoToken when it came in the URL (a page load, a form, a link): the URLs
    of the answer then carry it too. fetch() sends it as a header and keeps it on redirects."""
    target = request_target(env)
    if target is None:
        refuse(400)
        return
    try:
        length = int(env.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > MAX_BODY:
        refuse(400)
        return
    body = sys.stdin.buffer.read(length) if length else b""
    headers = {}
    for name in FORWARD_REQUEST:
        value = env.get("CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_"))
        if value:
            headers[name] = value
    try:
        path, uid = backend_socket()
        secret = read_secret()
    except Untrusted as exc:
        print(f"SmartPop: not talking to the backend: {exc}", file=sys.stderr)
        refuse(502)
        return
    except OSError:
        refuse(502)
        return
    headers.update({
        "X-SmartPop-Proof": secret,
        "X-SmartPop-User": user,
        "X-SmartPop-Session": session_digest(env),
        "X-SmartPop-Base": env.get("SCRIPT_NAME", ""),
        "Content-Length": str(len(body)),
    })
    if url_token:
        # The pages put it into every URL they render (styles and scripts cannot send headers).
        headers["X-SmartPop-SynoToken"] = url_token
    try:
        status, answer, data = exchange(path, uid, env.get("REQUEST_METHOD", "GET"), target, headers, body)
    except Untrusted as exc:
        print(f"SmartPop: not talking to the backend: {exc}", file=sys.stderr)
        refuse(502)
        return
    except ValueError:
        refuse(400)
        return
    except OSError:
        refuse(502)
        return
    wanted = {name.lower(): name for name in FORWARD_RESPONSE}
    passed = [(wanted[name.lower()], value) for name, value in answer if name.lower() in wanted and value]
    script = env.get("SCRIPT_NAME", "")
    passed = [(name, keep_token(local_location(value, script), url_token, script) if name == "Location" else value)
              for name, value in passed]
    respond(status, [*passed, ("Content-Length", str(len(data)))], data)


# For `smartpop doctor`: how the last request authenticated (no DSM user name, no token).
AUTH_RECORD = "cgi-auth.json"


def record_auth(token_source: str, result: str) -> None:
    """Leave DATA/cgi-auth.json (0600): which Unix user runs this CGI, where the SynoToken came from, the outcome."""
    import json
    import pwd
    import time

    try:
        data = os.path.realpath(DATA)
        uid = os.geteuid()
        if uid == 0 or os.stat(data).st_uid != uid:
            return  # only the package user writes into its own data dir
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = f"uid {uid}"
        record = {"user": name, "token": token_source, "result": result}
        path = os.path.join(data, AUTH_RECORD)
        try:
            with open(path, encoding="utf-8") as handle:
                old = json.load(handle)
            if {k: v for k, v in old.items() if k != "time"} == record and time.time() - os.stat(path).st_mtime < 300:
                return  # every page load brings several requests: write only what is new
        except (OSError, ValueError, AttributeError):
            pass
        record["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(tmp, path)
    except (OSError, KeyError, ValueError):
        pass  # a diagnostic only: never in the way of the request


def main() -> None:
    """Authenticate, authorise, proxy."""
    env = os.environ
    method = env.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "POST", "HEAD"):
        refuse(400)
        return
    token, brought, in_url = syno_token(env)
    user = dsm_user(env, token)
    source = "url" if in_url else "header" if brought else "none"
    if not user:
        record_auth(source, "no-session")
        # Without DSM's CSRF protection authenticate.cgi needs no token; with it, a page request
        # that brought none gets the page that fetches one in the browser.
        refuse(401, fetch_token=not brought and method in ("GET", "HEAD"))
        return
    if not is_admin(user):
        record_auth(source, "not-admin")
        refuse(403)
        return
    record_auth(source, "admin")
    proxy(env, user, token if in_url else "")


if __name__ == "__main__":
    main()
