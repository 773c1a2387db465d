"""The root relay task, as the admin sets it up in Task Scheduler, against a hostile package user.

DSM gives target/ and DATA to the package user. Whatever that user changes there (every Python
file, the launcher, bytecode caches, .pth and sitecustomize files), the command that `status` and
the Relay page show must run none of it as root: it runs the hash-checked bundle or refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from support.ports import free_ports
from support.postfix_relay import have_postfix, mailplus_like_dir, tree_digest
from support.synopkg import FakeDSM, Spk, assert_all_ok, wizard

pytestmark = pytest.mark.skipif(not have_postfix(), reason="needs root and the postfix tools")
ROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def _as_package_user(dsm: FakeDSM, script: str) -> None:
    """Run a Python snippet as the package user (it owns target/ and DATA)."""
    assert dsm.user is not None
    subprocess.run(["setpriv", f"--reuid={dsm.user.pw_uid}", f"--regid={dsm.user.pw_gid}", "--clear-groups",
                    "--", "/usr/bin/python3", "-c", script], check=True, cwd="/", env=ROOT_ENV, timeout=120)


def _tamper(dsm: FakeDSM, markers: Path, bundle_too: bool) -> None:
    """As the package user: plant a payload in every file root might load."""
    target, var = dsm.target, dsm.var
    script = f"""
import compileall, os, pathlib
target = pathlib.Path({str(target)!r}); var = pathlib.Path({str(var)!r}); markers = {str(markers)!r}
def payload(tag):
    return "\\nimport os as _o; open(" + repr(markers + "/" + tag) + ", 'w').write(str(_o.geteuid()))\\n"
hit = []
for path in sorted(target.rglob("*.py")):
    if path.name == "smartpop-relay.py" and not {bundle_too!r}:
        continue
    tag = str(path.relative_to(target)).replace("/", "_")
    with open(path, "a") as handle:
        handle.write(payload(tag))
    hit.append(tag)
launcher = target / "bin" / "smartpop"
launcher.write_text("#!/bin/sh\\necho $(id -u) > " + markers + "/launcher\\n")
hit.append("launcher")
for where in (target, target / "lib", target / "bin", var):
    (where / "sitecustomize.py").write_text(payload("sitecustomize_" + where.name))
    (where / "usercustomize.py").write_text(payload("usercustomize_" + where.name))
    (where / "zz-evil.pth").write_text("import os; open(" + repr(markers + "/pth_" + where.name) + ", 'w')\\n")
# Valid bytecode caches of the tampered sources, for the interpreter root uses.
compileall.compile_dir(str(target), quiet=1)
# DATA: a module shadowing the stdlib in the working directory, a planted package.
(var / "json.py").write_text(payload("data_json"))
(var / "smartpop").mkdir(exist_ok=True)
(var / "smartpop" / "__init__.py").write_text(payload("data_smartpop"))
print(len(hit))
"""
    _as_package_user(dsm, script)


def _postfix_dir(world_tmp: Path) -> Path:
    """MailPlus's config dir stand-in: root's, outside the package user's reach."""
    return mailplus_like_dir(world_tmp / "mailplus-etc")


def _markers(world_tmp: Path) -> Path:
    markers = world_tmp / "markers"
    markers.mkdir()
    markers.chmod(0o1777)  # any payload, run by anyone, could leave its marker here
    return markers


def _installed_with_relay(dsm: FakeDSM, spk: Spk) -> Dict[str, object]:
    assert_all_ok(dsm.install(spk, wizard(free_ports(1)[0]), start=False))
    result = dsm.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    relay: Dict[str, object] = json.loads(result.stdout)["relay"]
    return relay


def _run_as_admin_would(command: str, postfix_dir: Path, cwd: Path) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Task Scheduler: root, a shell, the pasted line (plus the test's Postfix and maps dirs)."""
    line = f"{command} --postfix-dir {postfix_dir} --maps-dir {postfix_dir.parent / 'smartpop-maps'}"
    return subprocess.run(["/bin/sh", "-c", line], cwd=str(cwd), env=ROOT_ENV, capture_output=True, text=True,
                          timeout=120)


def _foreign_files(var: Path, uid: int) -> List[str]:
    """Files in DATA not owned by the package user (root must leave none, except its relay/state)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(var):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.lstat().st_uid != uid and "relay/state" not in str(path):
                found.append(str(path.relative_to(var)))
    return found


def test_the_command_shown_to_the_admin_runs_the_system_python_isolated(dsm: FakeDSM, spk: Spk) -> None:
    """status names DSM's root-owned /usr/bin/python3 with -I -S and the bundle's hash; nothing from target/ runs."""
    relay = _installed_with_relay(dsm, spk)
    command = str(relay["task_command"])
    assert command.startswith("/usr/bin/python3 -I -S -c "), command
    bundle = dsm.target / "bin" / "smartpop-relay.py"
    assert f" {bundle} {hashlib.sha256(bundle.read_bytes()).hexdigest()} --data {dsm.var} relay task" in command
    assert relay["task_state"] == "never"


def test_tampered_package_files_never_run_as_root(dsm: FakeDSM, spk: Spk, world_tmp: Path) -> None:
    """The package user changes every file it owns, the bundle included: the root task refuses, runs nothing."""
    command = str(_installed_with_relay(dsm, spk)["task_command"])
    etc = _postfix_dir(world_tmp)
    markers = _markers(world_tmp)
    _tamper(dsm, markers, bundle_too=True)
    assert os.listdir(markers) == [], "tampering alone must not have run anything"
    before = tree_digest(etc)
    proc = _run_as_admin_would(command, etc, dsm.var)
    assert proc.returncode != 0
    assert "refused" in proc.stderr and "Copy the current command from SmartPop > Relay" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(markers) == [], f"payloads ran as root: {os.listdir(markers)}"
    assert tree_digest(etc) == before
    assert dsm.user is not None
    assert _foreign_files(dsm.var, dsm.user.pw_uid) == []
    assert not (dsm.var / "relay" / "state").exists()


def test_root_task_runs_only_the_verified_bundle(dsm: FakeDSM, spk: Spk, world_tmp: Path) -> None:
    """Everything but the bundle is tampered with: the task applies the relay and no payload runs."""
    command = str(_installed_with_relay(dsm, spk)["task_command"])
    etc = _postfix_dir(world_tmp)
    markers = _markers(world_tmp)
    _tamper(dsm, markers, bundle_too=False)
    assert os.listdir(markers) == []
    proc = _run_as_admin_would(command, etc, dsm.var)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.listdir(markers) == [], f"payloads ran as root: {os.listdir(markers)}"
    assert "smtp.ionos.de" in (etc / "main.cf").read_text()
    status = json.loads((dsm.var / "relay" / "state" / "status.json").read_text())
    assert status["state"] == "applied" and status["bundle_sha256"] in command
    # The Health page's open-relay check reads what the task recorded (docs/RELAY.md): root's, 0644.
    facts = dsm.var / "relay" / "state" / "postconf.json"
    assert facts.stat().st_uid == os.geteuid() and stat.S_IMODE(facts.stat().st_mode) == 0o644
    recorded = json.loads(facts.read_text())
    assert "error" not in recorded and "unauth_destination" in json.dumps(recorded["params"])
    assert dsm.user is not None
    assert _foreign_files(dsm.var, dsm.user.pw_uid) == []


def test_the_old_launcher_command_is_refused_as_root(dsm: FakeDSM, spk: Spk, world_tmp: Path) -> None:
    """The README's former line (the package's own launcher, as root) stops with the new command, exit 2."""
    command = str(_installed_with_relay(dsm, spk)["task_command"])
    etc = _postfix_dir(world_tmp)
    before = tree_digest(etc)
    old = f"{dsm.target}/bin/smartpop --data {dsm.var} relay task"
    proc = _run_as_admin_would(old, etc, dsm.var)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to run as root" in proc.stderr and command in proc.stderr
    assert tree_digest(etc) == before
    assert dsm.user is not None
    assert _foreign_files(dsm.var, dsm.user.pw_uid) == []


def test_after_an_upgrade_the_old_command_refuses_and_status_shows_the_new_one(
        dsm: FakeDSM, spk: Spk, spk_v2: Spk, world_tmp: Path) -> None:
    """A new version ships a new bundle: the pasted line refuses, status says 'outdated' with the new line."""
    old_command = str(_installed_with_relay(dsm, spk)["task_command"])
    etc = _postfix_dir(world_tmp)
    assert _run_as_admin_would(old_command, etc, dsm.var).returncode == 0
    relay = json.loads(dsm.cli("status", "--json").stdout)["relay"]
    assert relay["task_state"] == "current" and relay["task_version"] == spk.version
    assert_all_ok(dsm.upgrade(spk_v2))
    relay = json.loads(dsm.cli("status", "--json").stdout)["relay"]
    assert relay["task_state"] == "outdated" and relay["task_version"] == spk.version
    new_command = relay["task_command"]
    assert new_command and new_command != old_command
    text = dsm.cli("status").stdout
    assert new_command in text and "outdated" in text.lower()
    before = tree_digest(etc)
    proc = _run_as_admin_would(old_command, etc, dsm.var)
    assert proc.returncode != 0 and "refused" in proc.stderr
    assert tree_digest(etc) == before
    assert _run_as_admin_would(new_command, etc, dsm.var).returncode == 0
    relay = json.loads(dsm.cli("status", "--json").stdout)["relay"]
    assert relay["task_state"] == "current" and relay["task_version"] == spk_v2.version


@pytest.mark.parametrize("command", [["fetch"], ["check"], ["status"], ["serve"], ["fetch", "--account", "x"]])
def test_other_commands_as_root_on_the_package_data_refuse_and_leave_nothing(dsm: FakeDSM, spk: Spk,
                                                                             command: List[str]) -> None:
    """Admins pick root in Task Scheduler by habit: root must not leave files the package user cannot use."""
    _installed_with_relay(dsm, spk)
    before = sorted(str(p.relative_to(dsm.var)) for p in dsm.var.rglob("*"))
    line = " ".join([str(dsm.target / "bin" / "smartpop"), "--data", str(dsm.var), *command])
    proc = subprocess.run(["/bin/sh", "-c", line], cwd="/", env=ROOT_ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"refusing to run `{command[0]}` as root" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(dsm.var)) for p in dsm.var.rglob("*")) == before
    assert dsm.user is not None
    assert _foreign_files(dsm.var, dsm.user.pw_uid) == []
    result = dsm.cli("status")
    assert result.returncode == 0, result.stderr  # the package user is not locked out
