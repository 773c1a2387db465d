#!/usr/bin/python3
"""SmartPop's DSM entry point: check the DSM session, require `administrators`, proxy to the backend.

DSM serves this file as /webman/3rdparty/SmartPop/index.cgi. It runs on DSM's own Python 3.8
with the standard library only. The browser never sees the shared secret: the CGI reads it
from the package's data dir and adds it (with the DSM user name) to the proxied request.
Every X-SmartPop-* header the browser sends is dropped, so it cannot be forged from outside.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlencode

# Overridable for tests only; a browser cannot set these (request headers arrive as HTTP_*).
DATA = os.environ.get("SMARTPOP_CGI_DATA", "/var/packages/SmartPop/var")
AUTH_CGI = os.environ.get("SMARTPOP_AUTH_CGI", "/usr/syno/synoman/webman/modules/authenticate.cgi")
LOGIN_CGI = os.environ.get("SMARTPOP_LOGIN_CGI", "/usr/syno/synoman/webman/login.cgi")
GROUP_FILE = os.environ.get("SMARTPOP_GROUP_FILE", "/etc/group")
ADMIN_GROUP = "administrators"
DEFAULT_PORT = 8765
MAX_BODY = 2 * 1024 * 1024
TIMEOUT = 120.0

# Request headers worth passing on; everything else (cookies, X-SmartPop-*) stays here.
FORWARD_REQUEST = ["Content-Type", "Accept", "Accept-Language", "X-SmartPop-CSRF"]
FORWARD_RESPONSE = ["Content-Type", "Location", "Cache-Control", "Content-Security-Policy",
                    "X-Content-Type-Options", "Referrer-Policy", "Content-Disposition"]
_TOKEN = re.compile(r'"SynoToken"\s*:\s*"([A-Za-z0-9._~+/=-]{1,256})"')
_USER = re.compile(r"^[^\x00-\x1f\x7f:/]{1,128}$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/@%+-]*$")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>SmartPop</title></head>
<body style="font-family:sans-serif;margin:40px;color:#1f2d3d"><h1>SmartPop</h1>
<p>{en}</p><p lang="de">{de}</p></body></html>
"""
MESSAGES = {
    401: ("Please sign in to DSM first, then open SmartPop from the DSM desktop.",
          "Bitte melden Sie sich zuerst an DSM an und öffnen Sie SmartPop dann vom DSM-Desktop."),
    403: ("SmartPop is available to DSM administrators only.",
          "SmartPop steht nur DSM-Administratoren zur Verfügung."),
    502: ("The SmartPop service is not running. Start it in Package Center.",
          "Der SmartPop-Dienst läuft nicht. Starten Sie ihn im Paket-Zentrum."),
    400: ("This request is not valid.", "Diese Anfrage ist ungültig."),
}
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 502: "Bad Gateway"}


def respond(status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
    """Write a CGI response."""
    out = sys.stdout.buffer
    lines = [f"Status: {status} {REASONS.get(status, http.client.responses.get(status, ''))}"]
    lines += [f"{name}: {value}" for name, value in headers]
    out.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
    out.write(body)
    out.flush()


def refuse(status: int) -> None:
    """Answer with a small page that reveals nothing about the app."""
    en, de = MESSAGES[status]
    respond(status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
            PAGE.format(en=en, de=de).encode("utf-8"))


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


def syno_token(env: Mapping[str, str]) -> str:
    """The DSM CSRF token: from the request, else asked from login.cgi for this session."""
    given = env.get("HTTP_X_SYNO_TOKEN", "")
    if not given:
        given = dict(parse_qsl(env.get("QUERY_STRING", ""))).get("SynoToken", "")
    if given:
        return given
    # With DSM's CSRF protection on, authenticate.cgi needs the token; login.cgi tells it.
    match = _TOKEN.search(_run(LOGIN_CGI, env))
    return match.group(1) if match else ""


def dsm_user(env: Mapping[str, str], token: str) -> str:
    """The DSM user of this session according to authenticate.cgi, or ''."""
    auth_env = dict(env)
    if token:
        query = env.get("QUERY_STRING", "")
        auth_env["QUERY_STRING"] = (query + "&" if query else "") + urlencode({"SynoToken": token})
        auth_env["HTTP_X_SYNO_TOKEN"] = token
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


def backend() -> Tuple[int, str]:
    """The backend's port (config.json) and the shared secret (web.secret)."""
    port = DEFAULT_PORT
    try:
        with open(os.path.join(DATA, "config.json"), encoding="utf-8") as handle:
            port = int(json.load(handle).get("web", {}).get("port", DEFAULT_PORT))
    except (OSError, ValueError, AttributeError, TypeError):
        port = DEFAULT_PORT
    with open(os.path.join(DATA, "web.secret"), encoding="ascii") as handle:
        secret = handle.read().strip()
    return port, secret


def session_digest(env: Mapping[str, str], token: str) -> str:
    """A digest of the DSM session (cookie `id` and SynoToken), binding CSRF tokens to it."""
    cookies: Dict[str, str] = {}
    for part in env.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    material = cookies.get("id") or env.get("HTTP_COOKIE", "")
    return hashlib.sha256(f"{material}|{token}".encode()).hexdigest()[:32]


def request_target(env: Mapping[str, str]) -> Optional[str]:
    """Path and query for the backend (SynoToken removed), or None if the path is odd."""
    path = env.get("PATH_INFO", "") or "/"
    if not _PATH.match(path) or "/../" in path + "/":
        return None
    query = [(k, v) for k, v in parse_qsl(env.get("QUERY_STRING", ""), keep_blank_values=True) if k != "SynoToken"]
    return path + ("?" + urlencode(query) if query else "")


def proxy(env: Mapping[str, str], user: str, token: str) -> None:
    """Forward the request to the backend with the proof, and relay its answer."""
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
        port, secret = backend()
    except OSError:
        refuse(502)
        return
    headers.update({
        "X-SmartPop-Proof": secret,
        "X-SmartPop-User": user,
        "X-SmartPop-Session": session_digest(env, token),
        "X-SmartPop-Base": env.get("SCRIPT_NAME", ""),
        "Content-Length": str(len(body)),
    })
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(env.get("REQUEST_METHOD", "GET"), target, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        status = answer.status
        passed = [(name, answer.getheader(name, "")) for name in FORWARD_RESPONSE if answer.getheader(name)]
    except (OSError, http.client.HTTPException):
        refuse(502)
        return
    finally:
        connection.close()
    respond(status, [*passed, ("Content-Length", str(len(data)))], data)


def main() -> None:
    """Authenticate, authorise, proxy."""
    env = os.environ
    if env.get("REQUEST_METHOD", "GET") not in ("GET", "POST", "HEAD"):
        refuse(400)
        return
    token = syno_token(env)
    user = dsm_user(env, token)
    if not user:
        refuse(401)
        return
    if not is_admin(user):
        refuse(403)
        return
    proxy(env, user, token)


if __name__ == "__main__":
    main()
