"""ui/index.cgi: DSM session check, administrators only, proof header, nothing forgeable."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest
import requests
from webrig import CGI, ROOT, SCRIPT_NAME, STATIC_SOURCE, Browserless, CgiHost, Rig, unix_request

from support.ports import free_ports
from support.pythons import python38


def test_admin_with_dsm_session_gets_the_dashboard(rig: Rig, admin: Browserless) -> None:
    response = admin.get("/")
    assert response.status_code == 200
    assert "Fetch now" in response.text and "sammelpostfach" in response.text
    secret = rig.paths.web_secret.read_text().strip()
    assert all(secret not in body for body in admin.bodies)
    assert stat.S_IMODE(os.stat(rig.paths.web_secret).st_mode) == 0o600
    # The client sent the session's SynoToken (X-Syno-Token, as app.js does) and the stub
    # authenticate.cgi accepted it: the user name reached the backend.
    assert admin.get("/api/ping").json() == {"ok": True, "user": "admin"}


def test_synotoken_from_the_request_is_used(rig: Rig) -> None:
    sid, token = rig.dsm.login("admin")
    rig.dsm.login_cgi.write_text("#!/bin/sh\necho '{}'\n")  # login.cgi cannot help: the request's token must work
    response = requests.get(rig.host.url + "/api/ping", headers={"X-Syno-Token": token}, cookies={"id": sid},
                            timeout=60)
    assert response.status_code == 200 and response.json()["user"] == "admin"
    response = requests.get(rig.host.url + "/api/ping", cookies={"id": sid}, timeout=60)
    assert response.status_code == 401


def test_non_admin_is_refused(rig: Rig) -> None:
    anna = Browserless(rig, "anna")
    for path in ("/", "/accounts/", "/api/status", "/static/app.css"):
        response = anna.get(path)
        assert response.status_code == 403
        assert "administrators only" in response.text
        assert "sammelpostfach" not in response.text and "pop.provider.de" not in response.text


def test_no_session_is_refused(rig: Rig) -> None:
    nobody = Browserless(rig)
    for path in ("/", "/api/status", "/accounts/sammelpostfach/edit"):
        response = nobody.get(path)
        assert response.status_code == 401
        assert "sign in to DSM" in response.text
        assert "sammelpostfach" not in response.text.replace("/accounts/sammelpostfach", "")
    bogus = requests.get(rig.host.url + "/", cookies={"id": "not-a-session"}, timeout=60)
    assert bogus.status_code == 401


def test_forged_headers_do_not_help(rig: Rig) -> None:
    secret = rig.paths.web_secret.read_text().strip()
    forged = {"X-SmartPop-Proof": secret, "X-SmartPop-User": "admin", "X-SmartPop-Session": "x",
              "X-Syno-Token": "guess"}
    # Even with the real secret, a request without a DSM session stops at the CGI.
    response = requests.get(rig.host.url + "/api/status", headers=forged, timeout=60)
    assert response.status_code == 401
    # A non-admin cannot claim to be admin.
    sid, token = rig.dsm.login("anna")
    response = requests.get(rig.host.url + "/api/ping", headers={**forged, "X-Syno-Token": token},
                            cookies={"id": sid}, timeout=60)
    assert response.status_code == 403
    # An admin cannot pose as someone else: the CGI sets the user from authenticate.cgi.
    sid, token = rig.dsm.login("admin")
    response = requests.get(rig.host.url + "/api/ping", headers={"X-SmartPop-User": "mallory", "X-Syno-Token": token},
                            cookies={"id": sid}, timeout=60)
    assert response.json()["user"] == "admin"
    # The CGI forwarded none of the browser's X-SmartPop-* headers.
    assert rig.host.calls[-1]["HTTP_X_SMARTPOP_USER"] == "mallory"  # it saw it ...
    # ... and the backend still got "admin" (asserted above).


def test_backend_rejects_requests_without_the_proof(rig: Rig) -> None:
    for headers in ({}, {"X-SmartPop-Proof": "0" * 64, "X-SmartPop-User": "admin"},
                    {"X-SmartPop-Proof": "", "X-SmartPop-User": "admin"}):
        for path in ("/", "/api/status", "/static/app.css", "/accounts/", "/_dev/login?token=x"):
            status, text = unix_request(rig.backend.socket, "GET", path, headers)
            assert status in (403, 404)
            assert "sammelpostfach" not in text
        status, _text = unix_request(rig.backend.socket, "POST", "/api/fetch", headers)
        assert status == 403


def test_every_route_answers_nothing_without_admin_session(rig: Rig) -> None:
    nobody, anna = Browserless(rig), Browserless(rig, "anna")
    rules = list(rig.backend.app.url_map.iter_rules())
    assert len(rules) > 15
    for rule in rules:
        path = rule.rule.replace("<name>", "sammelpostfach").replace("<channel>", "dsm").replace(
            "<path:filename>", "app.css")
        for client in (nobody, anna):
            for method in sorted((rule.methods or set()) & {"GET", "POST"}):
                response = client.get(path) if method == "GET" else client.post(path, data={"x": "1"})
                assert response.status_code in (401, 403), (method, path, response.status_code)
                assert "sammel@firma.de" not in response.text


def test_post_without_csrf_token_is_refused(rig: Rig, admin: Browserless) -> None:
    before = rig.paths.config.read_bytes()
    response = admin.post("/accounts/sammelpostfach/toggle")
    assert response.status_code == 403
    response = admin.post("/accounts/sammelpostfach/toggle", data={"csrf_token": "0" * 64})
    assert response.status_code == 403
    assert rig.paths.config.read_bytes() == before
    # Another admin session's token does not work in this session.
    other = Browserless(rig, "admin")
    response = admin.post("/accounts/sammelpostfach/toggle", data={"csrf_token": other.csrf()})
    assert response.status_code == 403
    response = admin.post("/accounts/sammelpostfach/toggle", data={"csrf_token": admin.csrf()})
    assert response.status_code == 302
    assert json.loads(rig.paths.config.read_text())["accounts"][0]["enabled"] is False


def test_backend_down_gives_a_clear_page(rig: Rig, admin: Browserless) -> None:
    rig.backend.stop()
    time.sleep(0.2)
    response = admin.get("/")
    assert response.status_code == 502
    assert "not running" in response.text


def test_cgi_runs_on_python38(rig: Rig) -> None:
    py38 = python38()
    if py38 is None:
        pytest.skip("no Python 3.8 on this machine (DSM 7's interpreter); CI images have it via pyenv")
    version = subprocess.run([py38, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip() == "(3, 8)"
    host = CgiHost(rig.dsm, rig.paths.data, python=py38)
    try:
        sid, token = rig.dsm.login("admin")
        response = requests.get(host.url + "/api/ping", cookies={"id": sid}, headers={"X-Syno-Token": token},
                                timeout=60)
        assert response.status_code == 200 and response.json()["user"] == "admin"
        sid, token = rig.dsm.login("anna")
        assert requests.get(host.url + "/", cookies={"id": sid}, headers={"X-Syno-Token": token},
                            timeout=60).status_code == 403
    finally:
        host.stop()


def test_cgi_is_executable_and_uses_dsm_python() -> None:
    assert os.access(CGI, os.X_OK)
    # DSM's own Python, isolated (-I: no PYTHON* variables, no user site) and without site (-S):
    # stdlib only, and a faster start on every request. One argument: the kernel passes
    # everything after the interpreter as one, and "-IS" is a valid single argument.
    assert CGI.read_text().startswith("#!/usr/bin/python3 -IS\n")
    if Path("/usr/bin/python3").exists():
        # Run through the shebang the way DSM's web server runs it: no session, so 401 and the page.
        proc = subprocess.run([str(CGI)], env={"REQUEST_METHOD": "GET", "SMARTPOP_AUTH_CGI": "/nonexistent",
                                               "PYTHONPATH": "/nonexistent"}, capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(b"Status: 401 Unauthorized\r\n") and b"sign in to DSM" in proc.stdout
    config = json.loads((ROOT / "ui" / "config").read_text())
    app = config[".url"]["SYNO.SDS._ThirdParty.App.SmartPop"]
    assert app["url"] == "/webman/3rdparty/SmartPop/index.cgi"
    assert app["allUsers"] is False
    # Title and description come from ui/texts/<lang>/strings (German and English).
    assert app["title"] == "app:title" and app["desc"] == "app:desc"
    for lang in ("enu", "ger"):
        strings = (ROOT / "ui" / "texts" / lang / "strings").read_text(encoding="utf-8")
        assert strings.startswith("[app]\n") and 'title="SmartPop"' in strings and "desc=" in strings
    assert "Holt Provider-Mails" in (ROOT / "ui" / "texts" / "ger" / "strings").read_text(encoding="utf-8")


def test_dev_mode_prints_a_token_and_requires_it(tmp_path: Path) -> None:
    data = Path(os.path.join("/tmp", f"spdev{os.getpid()}"))
    data.mkdir(mode=0o700, exist_ok=True)
    port = free_ports(1)[0]
    (data / "config.json").write_text(json.dumps({"schema_version": 1, "accounts": [], "web": {"port": port}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "package")}
    proc = subprocess.Popen([sys.executable, "-m", "smartpop", "--data", str(data), "serve", "--dev"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 30
        while "token=" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "token=" in line, "serve --dev prints its login URL"
        token = line.strip().rsplit("token=", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/", timeout=10).status_code == 403
        assert requests.get(base + "/_dev/login?token=wrong", timeout=10).status_code == 403
        session = requests.Session()
        response = session.get(base + f"/_dev/login?token={token}", timeout=10)
        assert response.status_code == 200 and "Fetch now" in response.text
        assert token not in (data / "smartpop.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(data)], check=False)


def test_serve_without_dev_has_no_dev_login(rig: Rig) -> None:
    assert "dev.dev_login" not in {r.endpoint for r in rig.backend.app.url_map.iter_rules()}
    assert "dev_login" not in {r.endpoint for r in rig.backend.app.url_map.iter_rules()}


def test_empty_path_info_falls_back_to_the_request_uri(rig: Rig) -> None:
    # Some DSM versions give a 3rdparty CGI no PATH_INFO: the path comes from REQUEST_URI then.
    host = CgiHost(rig.dsm, rig.paths.data, path_info=False)
    try:
        client = Browserless(rig, "admin")
        client.rig = type("R", (), {"host": host})()  # type: ignore[assignment]
        page = client.get("/logs/?level=ERROR")
        assert page.status_code == 200
        assert "PATH_INFO" not in host.calls[-1]
        assert 'id="log-table"' in page.text and 'id="fetch-now"' not in page.text
        assert client.get("/accounts/").text.count('id="nav-accounts" class="active"') == 1
        token = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
        assert token
        response = client.post("/accounts/sammelpostfach/toggle", data={"csrf_token": token.group(1)})
        assert response.status_code == 302
        assert response.headers["Location"].startswith(SCRIPT_NAME + "/accounts/")
        assert json.loads(rig.paths.config.read_text())["accounts"][0]["enabled"] is False
    finally:
        host.stop()


def test_pages_take_styles_and_scripts_from_dsm_not_from_the_cgi(rig: Rig, admin: Browserless) -> None:
    before = len(rig.host.calls)
    page = admin.get("/accounts/")
    assert page.status_code == 200
    assets = re.findall(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"', page.text)
    assert len(assets) == 2
    for url in assets:
        path = url.split("?", 1)[0]
        # Under the package's ui/ dir, which DSM's web server answers itself: no CGI, no token.
        assert path.startswith("/webman/3rdparty/SmartPop/static/") and "index.cgi" not in path
        assert "SynoToken" not in url
        response = requests.get(f"http://127.0.0.1:{rig.host.port}{url}", timeout=10)
        assert response.status_code == 200
        assert response.content == (STATIC_SOURCE / Path(path).name).read_bytes()
    # One CGI run for the page view; the files came straight from the ui dir.
    assert len(rig.host.calls) == before + 1
    assert sorted(rig.host.static_requests) == sorted(u.split("?", 1)[0] for u in assets)


def test_build_puts_the_static_files_into_the_ui_dir() -> None:
    script = (ROOT / "build.sh").read_text()
    assert 'cp -R package/smartpop/web/static "$STAGE/ui/static"' in script


def test_redirects_stay_under_the_app(rig: Rig, admin: Browserless) -> None:
    # No trailing slash: the backend answers with a redirect to its own http://localhost/… URL.
    for path, target in (("/logs", "/logs/"), ("/accounts", "/accounts/"), ("/routing?x=1", "/routing/?x=1")):
        response = admin.get(path)
        assert response.status_code in (301, 302, 308), path
        location = response.headers["Location"]
        assert location == SCRIPT_NAME + target, location
        assert "127.0.0.1" not in location and "localhost" not in location
        followed = admin.get(location[len(SCRIPT_NAME):])
        assert followed.status_code == 200


def test_redirect_rewrite_rules() -> None:
    module = _cgi_module()
    script = "/webman/3rdparty/SmartPop/index.cgi"
    assert module.local_location("http://localhost/webman/3rdparty/SmartPop/index.cgi/logs/", script) == \
        script + "/logs/"
    assert module.local_location("http://127.0.0.1:8765/accounts/?done=saved", script) == \
        script + "/accounts/?done=saved"
    assert module.local_location("/logs/", script) == script + "/logs/"
    assert module.local_location(script + "/relay/", script) == script + "/relay/"
    assert module.local_location("https://evil.example/x", script) == script + "/"


def _cgi_module() -> Any:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("smartpop_index_cgi", str(CGI))
    spec = importlib.util.spec_from_loader("smartpop_index_cgi", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("lang", ["de", "en"])
def test_not_found_is_a_page_of_the_app(rig: Rig, admin: Browserless, lang: str) -> None:
    for path in ("/no-such-page", "/accounts/otto/edit"):
        response = admin.get(path, headers={"Accept-Language": lang})
        assert response.status_code == 404
        assert 'id="error-page"' in response.text and 'class="topbar"' in response.text
        assert '/webman/3rdparty/SmartPop/static/app.css' in response.text
        title = {"de": "Seite nicht gefunden", "en": "Page not found"}[lang]
        assert f"<h1>{title}</h1>" in response.text
        assert "Not found" not in response.text.replace("Page not found", "")
    answer = admin.get("/api/nothing", headers={"Accept-Language": lang})
    assert answer.status_code == 404 and answer.json()["ok"] is False


@pytest.mark.parametrize("lang", ["de", "en"])
def test_a_crash_is_a_page_of_the_app_not_a_traceback(rig: Rig, admin: Browserless, lang: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from smartpop.web.views import dashboard

    def broken() -> Dict[str, Any]:
        raise RuntimeError("kaputt-intern-42")

    monkeypatch.setattr(dashboard, "_report", broken)
    response = admin.get("/", headers={"Accept-Language": lang})
    assert response.status_code == 500
    assert 'id="error-page"' in response.text
    title = {"de": "Etwas ist schiefgegangen", "en": "Something went wrong"}[lang]
    assert f"<h1>{title}</h1>" in response.text
    assert "Traceback" not in response.text and "kaputt-intern-42" not in response.text
    answer = admin.get("/api/status", headers={"Accept-Language": lang})
    assert answer.status_code == 500 and answer.json()["ok"] is False  # the page script gets JSON
    assert "kaputt-intern-42" not in answer.text
    assert admin.get("/api/ping").status_code == 200  # only the broken views fail


def test_dev_login_url_works_once(tmp_path: Path) -> None:
    from smartpop.paths import Paths, ensure_data_dir
    from smartpop.web.app import create_app

    paths = Paths(tmp_path / "data")
    ensure_data_dir(paths)
    (paths.data / "config.json").write_text(json.dumps({"schema_version": 1, "accounts": []}))
    app = create_app(paths, dev_token="the-printed-token")
    first, second = app.test_client(), app.test_client()
    assert first.get("/_dev/login?token=wrong").status_code == 403
    response = first.get("/_dev/login?token=the-printed-token")
    assert response.status_code == 302
    assert first.get("/").status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "the-printed-token" not in cookie  # the cookie is a session of its own, not the token
    # The same URL again (history, a screenshot, another browser): refused.
    assert second.get("/_dev/login?token=the-printed-token").status_code == 403
    assert second.get("/").status_code == 403
    second.set_cookie("smartpop_dev", "the-printed-token")
    assert second.get("/").status_code == 403
    assert first.get("/").status_code == 200
