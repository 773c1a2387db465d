"""The built .spk, installed, started, upgraded and removed the way DSM 7 does it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

from support.ports import free_ports
from support.synopkg import (
    FETCH_PASSWORD,
    RELAY_PASSWORD,
    FakeDSM,
    Spk,
    assert_all_ok,
    mode_of,
    wizard,
)


def cgi_headers(secret: str) -> Dict[str, str]:
    """The headers index.cgi adds for an authenticated DSM administrator."""
    return {"X-SmartPop-Proof": secret, "X-SmartPop-User": "admin", "X-SmartPop-Session": "lifecycle"}


class _UnixConnection(http.client.HTTPConnection):
    """http.client over the backend's Unix socket (DATA/run/web.sock, what index.cgi uses)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def get(nas: FakeDSM, secret: str = "", path: str = "/") -> Tuple[int, bytes]:
    """HTTP status and body of GET path on the backend, with the CGI's headers when secret is given."""
    connection = _UnixConnection(nas.var / "run" / "web.sock")
    try:
        connection.request("GET", path, headers=cgi_headers(secret) if secret else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_listening(nas: FakeDSM, timeout: float = 10.0) -> None:
    """Wait until the backend answers on its socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get(nas)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {nas.var / 'run' / 'web.sock'}")


def daemon_pid(nas: FakeDSM) -> int:
    """The pid recorded by start-stop-status."""
    return int((nas.var / "smartpop.pid").read_text().strip())


def alive(pid: int) -> bool:
    """True while the process exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def tree_digest(root: Path) -> Dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_start_status_stop(dsm: FakeDSM, spk: Spk) -> None:
    """A fresh install writes the config from the wizard and runs the daemon as the package user."""
    port = free_ports(1)[0]
    runs = dsm.install(spk, wizard(port))
    assert_all_ok(runs)
    assert [(r.script, r.action) for r in runs] == [
        ("preinst", ""), ("postinst", ""), ("start-stop-status", "prestart"), ("start-stop-status", "start")]
    assert runs[0].stdout == "" and runs[0].dialog == "", "preinst must stay silent when all is well"

    config_path = dsm.var / "config.json"
    assert mode_of(config_path) == 0o600
    if dsm.user is not None:
        assert config_path.stat().st_uid == dsm.user.pw_uid
    config = json.loads(config_path.read_text())
    assert config["schema_version"] == 1
    account = config["accounts"][0]
    assert (account["name"], account["protocol"], account["host"], account["port"], account["security"]) == (
        "sammelpostfach", "pop3", "pop.ionos.de", 995, "ssl")
    assert account["username"] == "sammel@firma.de" and account["password"] == FETCH_PASSWORD
    assert account["mode"] == "multidrop"
    assert config["local_domains"] == ["firma.de", "firma-zwei.de"]
    assert config["fallback_recipient"] == "postmaster@firma.de"
    assert config["relay"]["enabled"] is True and config["relay"]["password"] == RELAY_PASSWORD
    assert (config["relay"]["host"], config["relay"]["port"]) == ("smtp.ionos.de", 587)
    assert config["web"]["port"] == port
    assert f'dst.ports="{port}/tcp"' in (dsm.target / "ui/SmartPop.sc").read_text()

    # The daemon: running, as the package user, serving only authenticated requests.
    pid = daemon_pid(dsm)
    assert alive(pid)
    if dsm.user is not None:
        assert os.stat(f"/proc/{pid}").st_uid == dsm.user.pw_uid
    assert dsm.status() == 0
    wait_listening(dsm)
    assert get(dsm)[0] == 403
    assert get(dsm, "forged")[0] == 403
    assert get(dsm, (dsm.var / "web.secret").read_text().strip())[0] == 200
    with pytest.raises(OSError):  # production listens on no TCP port (issue 11 §3)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert mode_of(dsm.var / "web.secret") == 0o600

    # start is idempotent; stop ends the process and status says "not running".
    assert_all_ok(dsm.start())
    assert daemon_pid(dsm) == pid
    assert_all_ok(dsm.stop())
    assert not alive(pid)
    assert not (dsm.var / "smartpop.pid").exists()
    assert "SmartPop backend stopped" in (dsm.var / "smartpop.log").read_text(), "SIGTERM must stop it cleanly"
    assert dsm.status() == 3
    assert_all_ok(dsm.start())
    assert dsm.status() == 0 and alive(daemon_pid(dsm))


def test_wizard_secrets_never_in_argv_logs_or_dialogs(dsm: FakeDSM, spk: Spk) -> None:
    """Passwords reach config.json only: not argv, not the install log, not any output."""
    assert_all_ok(dsm.install(spk, wizard(free_ports(1)[0])))
    argv_lines = dsm.argv_log.read_text()
    assert "wizard-config" in argv_lines, "the shim must have seen the interpreter calls"
    places = {"argv": argv_lines}
    for run in dsm.runs:
        places[f"{run.script} {run.action}"] = run.stdout + run.stderr + run.dialog
    for path in dsm.var.rglob("*"):
        if path.is_file() and path.name != "config.json":
            places[str(path)] = path.read_text(errors="replace")
    for where, text in places.items():
        for secret in (FETCH_PASSWORD, RELAY_PASSWORD):
            assert secret not in text, f"a wizard password leaked into {where}"


def test_upgrade_keeps_data_and_runs_new_version(dsm: FakeDSM, spk: Spk, spk_v2: Spk) -> None:
    """Upgrade follows DSM's order, keeps $SYNOPKG_PKGVAR byte-identical and restarts."""
    port = free_ports(1)[0]
    assert_all_ok(dsm.install(spk, wizard(port)))
    state = dsm.var / "state.sqlite3"
    # A new file, not the running daemon's database rewritten in place: the daemon keeps its
    # store open, and its connections would checkpoint into a rewritten file when it stops.
    stand_in = dsm.var / "state.sqlite3.new"
    stand_in.write_bytes(b"collection state stand-in \x00\x01")
    owner = state.stat()
    os.chown(stand_in, owner.st_uid, owner.st_gid)
    stand_in.chmod(owner.st_mode & 0o777)
    os.replace(stand_in, state)
    before = tree_digest(dsm.var)
    old_pid = daemon_pid(dsm)

    runs = dsm.upgrade(spk_v2)
    assert_all_ok(runs)
    assert [(r.script, r.action) for r in runs] == [
        ("start-stop-status", "prestop"), ("start-stop-status", "stop"), ("preupgrade", ""), ("preuninst", ""),
        ("postuninst", ""), ("preinst", ""), ("postinst", ""), ("postupgrade", ""),
        ("start-stop-status", "prestart"), ("start-stop-status", "start")]
    assert not alive(old_pid)
    after = tree_digest(dsm.var)
    for name in ("config.json", "web.secret", "state.sqlite3"):
        assert after[name] == before[name], f"{name} changed during the upgrade"
    assert spk_v2.info["version"] == "0.1.0-0002"
    assert '__version__ = "0.1.0-0002"' in (dsm.target / "smartpop/__init__.py").read_text()
    assert dsm.status() == 0
    wait_listening(dsm)
    secret = (dsm.var / "web.secret").read_text().strip()
    status, body = get(dsm, secret, "/api/status")
    assert status == 200 and json.loads(body)["version"] == "0.1.0-0002"


def test_upgrade_migrates_an_old_config(dsm: FakeDSM, spk: Spk, spk_v2: Spk) -> None:
    """A schema-0 config (pre-versioning key names) is migrated on upgrade; the original is kept."""
    port = free_ports(1)[0]
    assert_all_ok(dsm.install(spk, wizard(port), start=False))
    old = {"accounts": [{"name": "info", "protocol": "imap", "host": "imap.strato.de", "ssl": True, "keep": True,
                         "username": "info@firma.de", "password": "old-Secret-1", "mode": "single",
                         "deliver_to": "anna@firma.de"}],
           "local_domains": ["firma.de"], "fallback": "postmaster@firma.de", "web": {"port": port}}
    original = json.dumps(old).encode()
    (dsm.var / "config.json").write_bytes(original)
    assert_all_ok(dsm.upgrade(spk_v2))
    migrated = json.loads((dsm.var / "config.json").read_text())
    assert migrated["schema_version"] == 1
    assert migrated["fallback_recipient"] == "postmaster@firma.de"
    account = migrated["accounts"][0]
    assert (account["security"], account["keep_on_server"], account["port"]) == ("ssl", True, 993)
    assert (dsm.var / "config.json.pre-migration").read_bytes() == original
    assert mode_of(dsm.var / "config.json") == 0o600


def test_uninstall_keeps_data_by_default(dsm: FakeDSM, spk: Spk) -> None:
    """Uninstall with 'keep' leaves var intact; a re-install with an empty password keeps the old one."""
    port = free_ports(1)[0]
    assert_all_ok(dsm.install(spk, wizard(port)))
    pid = daemon_pid(dsm)
    before = tree_digest(dsm.var)
    runs = dsm.uninstall({"wizard_keep_data": "true", "wizard_delete_data": "false", "wizard_relay_restore": "false"})
    assert_all_ok(runs)
    assert not alive(pid)
    assert not dsm.target.exists()
    after = tree_digest(dsm.var)
    assert after["config.json"] == before["config.json"] and after["web.secret"] == before["web.secret"]

    assert_all_ok(dsm.install(spk, wizard(port, wizard_fetch_password="", wizard_fetch_host="pop.strato.de")))
    config = json.loads((dsm.var / "config.json").read_text())
    assert config["accounts"][0]["host"] == "pop.strato.de"
    assert config["accounts"][0]["password"] == FETCH_PASSWORD


def test_uninstall_delete_removes_all_data(dsm: FakeDSM, spk: Spk) -> None:
    """Uninstall with 'delete' empties var, secrets included."""
    assert_all_ok(dsm.install(spk, wizard(free_ports(1)[0])))
    assert (dsm.var / "config.json").exists()
    assert_all_ok(dsm.uninstall({"wizard_keep_data": "false", "wizard_delete_data": "true",
                                 "wizard_relay_restore": "false"}))
    assert dsm.var.is_dir()
    assert list(dsm.var.iterdir()) == []


def root_task_status(dsm: FakeDSM, state: str) -> None:
    """What the root Task Scheduler job leaves in its own state dir (root-owned, world-readable)."""
    state_dir = dsm.var / "relay" / "state"
    state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    (state_dir / "status.json").write_text(json.dumps({"state": state, "detail": "", "fingerprint": None}))
    (state_dir / "status.json").chmod(0o644)
    if dsm.user is not None:  # DATA/relay belongs to the package user, state/ to root
        os.chown(dsm.var / "relay", dsm.user.pw_uid, dsm.user.pw_gid)


RESTORE = {"wizard_keep_data": "true", "wizard_delete_data": "false", "wizard_relay_restore": "true"}


def test_uninstall_with_relay_restore_waits_for_the_root_task(dsm: FakeDSM, spk: Spk) -> None:
    """Relay still patched + 'restore': preuninst leaves the request and stops the uninstall;
    once the root task has rolled back, the uninstall goes through."""
    port = free_ports(1)[0]
    assert_all_ok(dsm.install(spk, wizard(port)))
    root_task_status(dsm, "applied")
    runs = dsm.uninstall(RESTORE)
    preuninst = next(r for r in runs if r.script == "preuninst")
    assert preuninst.rc == 1, "the uninstall must stop while MailPlus still uses SmartPop's relay settings"
    assert "Task Scheduler" in preuninst.dialog and "uninstall SmartPop again" in preuninst.dialog
    assert (dsm.var / "relay" / "rollback.request").is_file()
    assert (dsm.target / "bin" / "smartpop").is_file(), "the package code must survive an aborted uninstall"
    assert dsm.status() == 0, "DSM starts the package again after an aborted uninstall"
    result = dsm.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["relay"]["state"] == "pending"

    # The root task rolled back (status says so, request consumed): now the uninstall passes.
    root_task_status(dsm, "rolled back")
    (dsm.var / "relay" / "rollback.request").unlink()
    assert_all_ok(dsm.uninstall(RESTORE))
    assert not dsm.target.exists()
    assert not (dsm.var / "relay" / "rollback.request").exists()


def test_uninstall_with_relay_restore_but_relay_never_applied(dsm: FakeDSM, spk: Spk) -> None:
    """'Restore' ticked, but the root task never touched Postfix: nothing to wait for."""
    assert_all_ok(dsm.install(spk, wizard(free_ports(1)[0])))
    assert_all_ok(dsm.uninstall(RESTORE))
    assert not dsm.target.exists()
    assert not (dsm.var / "relay" / "rollback.request").exists()


def test_uninstall_without_relay_restore_leaves_mailplus_as_is(dsm: FakeDSM, spk: Spk) -> None:
    """Unticking 'restore' uninstalls at once and requests nothing."""
    assert_all_ok(dsm.install(spk, wizard(free_ports(1)[0])))
    root_task_status(dsm, "applied")
    assert_all_ok(dsm.uninstall({"wizard_keep_data": "true", "wizard_delete_data": "false",
                                 "wizard_relay_restore": "false"}))
    assert not dsm.target.exists()
    assert not (dsm.var / "relay" / "rollback.request").exists()


@pytest.mark.parametrize(("language", "expected"), [
    ("enu", "needs Python 3.8 or newer"), ("ger", "benötigt Python 3.8 oder neuer")])
def test_preinst_refuses_a_nas_without_python(world_tmp: Path, spk: Spk, language: str, expected: str) -> None:
    """No usable interpreter: install aborts in preinst with a clear, localised message."""
    nas = FakeDSM(world_tmp / "nas", None, language=language)
    too_old = world_tmp / "python3.7"
    too_old.write_text("#!/bin/sh\nexit 1\n")
    too_old.chmod(0o755)
    run = nas.run(spk.root / "scripts", "preinst", spk, "INSTALL", wizard=wizard(8765),
                  extra_env={"SMARTPOP_PYTHON_CANDIDATES": f"/nonexistent/python3 {too_old}"})
    assert run.rc == 1
    assert expected in run.dialog
    assert not nas.target.exists()


@pytest.mark.parametrize(("override", "expected"), [
    ({"wizard_relay_host": ""}, "SMTP server name is missing"),
    ({"wizard_fetch_password": "abc\ndef"}, "line break"),
    ({"wizard_fetch_port": "99999"}, "provider port"),
    ({"wizard_web_port": "80"}, "internal port"),
    ({"wizard_fetch_host": "pop.ionos.de; rm -rf /"}, "server name is not valid"),
])
def test_preinst_rejects_bad_wizard_answers(dsm: FakeDSM, spk: Spk, override: Dict[str, str], expected: str) -> None:
    """Invalid answers stop the install before anything is written, with the reason shown."""
    runs = dsm.install(spk, wizard(8765, **override))
    assert runs[-1].script == "preinst" and runs[-1].rc == 1
    assert expected in runs[-1].dialog
    assert not (dsm.var / "config.json").exists()
    assert not dsm.target.exists()


def test_start_reports_a_daemon_that_cannot_start(dsm: FakeDSM, spk: Spk) -> None:
    """A start that fails (the socket's place taken) exits non-zero with the reason, and status stays 3.

    Someone on web.port does not matter: the backend listens on DATA/run/web.sock only."""
    port = free_ports(1)[0]
    assert_all_ok(dsm.install(spk, wizard(port), start=False))
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        assert_all_ok(dsm.start())
        wait_listening(dsm)
    finally:
        blocker.close()
    assert_all_ok(dsm.stop())
    (dsm.var / "run").rmdir()
    (dsm.var / "run").write_text("not a directory")
    runs = dsm.start()
    assert runs[-1].action == "start" and runs[-1].rc == 1
    assert "SmartPop did not start" in runs[-1].dialog and "run" in runs[-1].dialog
    assert dsm.status() == 3


def test_prestart_without_config_refuses(dsm: FakeDSM, spk: Spk) -> None:
    """prestart explains a missing config instead of starting a daemon that cannot work."""
    assert_all_ok(dsm.install(spk, wizard(free_ports(1)[0]), start=False))
    (dsm.var / "config.json").unlink()
    runs = dsm.start()
    assert runs[-1].action == "prestart" and runs[-1].rc == 1
    assert "no configuration" in runs[-1].dialog


def test_scripts_refuse_to_run_outside_synopkg(spk: Spk, tmp_path: Path) -> None:
    """The lifecycle scripts need DSM's environment and say so."""
    import subprocess

    work = tmp_path / "scripts"
    shutil.copytree(spk.root / "scripts", work)
    proc = subprocess.run([str(work / "postinst")], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "synopkg" in proc.stderr
