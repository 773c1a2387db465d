"""The verified root command: bootstrap, bundle, and what the package side reports about the task."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from smartpop.paths import Paths
from smartpop.relay import roottask
from support.postfix_relay import write_config
from support.relay_bundle import REPO, built_bundle, root_task_argv

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _run(argv: list, cwd: Path, env: dict = ENV) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=60)


def test_bundle_is_reproducible_and_holds_only_the_relay_code(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import relay_bundle
    finally:
        sys.path.remove(str(REPO / "tools"))
    lib = Path(__import__("filelock").__file__).resolve().parent.parent
    first = relay_bundle.build(REPO / "package", tmp_path / "a.py", [lib])
    second = relay_bundle.build(REPO / "package", tmp_path / "b.py", [lib])
    assert first == second == hashlib.sha256((tmp_path / "a.py").read_bytes()).hexdigest()
    files = relay_bundle.collect(REPO / "package", [lib])
    assert {name.split("/")[0] for name in files} == {"smartpop", "filelock"}
    assert not any(name.startswith(("smartpop/web/", "smartpop/collector/")) for name in files)
    assert "smartpop/relay/patcher.py" in files and "smartpop/cli.py" in files


def test_command_shape_and_states(tmp_path: Path) -> None:
    bundle = built_bundle()
    env = {"SMARTPOP_RELAY_BUNDLE": str(bundle)}
    command = roottask.task_command(Paths(tmp_path / "data"), env=env)
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert command.startswith("/usr/bin/python3 -I -S -c 'import sys,os,hashlib;")
    assert command.endswith(f"' {bundle} {sha} --data {tmp_path / 'data'} relay task")
    assert roottask.task_state({}, env=env)["task_state"] == "never"
    assert roottask.task_state({"bundle_sha256": sha, "version": "9"}, env=env)["task_state"] == "current"
    old = roottask.task_state({"bundle_sha256": "0" * 64, "version": "0.1.0-0001"}, env=env)
    assert old == {"task_state": "outdated", "task_version": "0.1.0-0001", "task_last_run": None}
    # An older version's status has no hash at all: also outdated.
    assert roottask.task_state({"state": "applied"}, env=env)["task_state"] == "outdated"
    missing = {"SMARTPOP_RELAY_BUNDLE": str(tmp_path / "absent.py")}
    assert roottask.task_command(Paths(tmp_path), env=missing) == ""
    assert roottask.task_state({"state": "applied"}, env=missing)["task_state"] == "unavailable"


def _planted(tmp_path: Path, marker: Path) -> Path:
    """A directory with look-alike smartpop/filelock packages and a stdlib shadow that leave a marker."""
    evil = tmp_path / "evil"
    for package in ("smartpop", "filelock"):
        (evil / package).mkdir(parents=True)
        (evil / package / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (evil / "json.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (evil / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w')\n")
    return evil


def test_bundle_imports_nothing_from_disk(tmp_path: Path) -> None:
    """cwd, PYTHONPATH and look-alike packages are ignored: only the verified bytes run."""
    marker = tmp_path / "pwned"
    evil = _planted(tmp_path, marker)
    data = tmp_path / "data"
    write_config(data, {"enabled": False})
    env = dict(ENV, PYTHONPATH=str(evil), PYTHONSTARTUP=str(evil / "json.py"), PYTHONHOME="")
    env.pop("PYTHONHOME")
    proc = _run(root_task_argv(data, "status", "--json"), cwd=evil, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] in ("disabled", "unknown")
    assert not marker.exists()


def test_a_changed_bundle_is_refused_with_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bundle = tmp_path / "smartpop-relay.py"
    bundle.write_bytes(built_bundle().read_bytes())
    argv = root_task_argv(tmp_path / "data", "task", bundle=bundle)
    with open(bundle, "ab") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w')\n".encode())
    proc = _run(argv, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("smartpop: refused: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "data").exists()
    bundle.unlink()
    proc = _run(argv, cwd=tmp_path)
    assert proc.returncode == 1 and "is missing: SmartPop is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["status"], ["fetch"], ["serve"]])
def test_the_bundle_runs_relay_commands_only(tmp_path: Path, command: list) -> None:
    data = tmp_path / "data"
    write_config(data, {"enabled": False})
    argv = root_task_argv(data, "status")
    argv = argv[: argv.index("relay")] + command
    proc = _run(argv, cwd=tmp_path)
    assert proc.returncode == 2 and "runs `relay` commands only" in proc.stderr, proc.stderr


def test_the_task_records_the_relay_rules_for_the_open_relay_check(tmp_path: Path) -> None:
    """The verified task leaves postconf's effective relay rules (0644, atomic) in root's state dir, nothing else.

    The parameter list is a constant of the verified bundle: nothing the package user writes
    extends it, and the file only ever holds relayfacts.PARAMS (no secret).
    """
    from smartpop.health.openrelay import check_open_relay, load_facts
    from smartpop.relay.relayfacts import PARAMS
    from support.postfix_relay import mailplus_like_dir, run_relay

    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    with open(etc / "master.cf", "a") as handle:
        handle.write("submission inet n - y - - smtpd\n  -o mynetworks=0.0.0.0/0\n")
    write_config(data, {"enabled": True, "host": "smtp.provider.test", "port": 587, "security": "starttls",
                        "username": "anna@firma.test", "password": "pw-Facts-1"})
    proc = run_relay(data, "task", etc)
    assert proc.returncode == 0, proc.stderr
    recorded = data / "relay" / "state" / "postconf.json"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o644
    facts = load_facts(Paths(data))
    assert facts is not None and set(facts["params"]) == set(PARAMS)
    assert facts["params"]["smtpd_recipient_restrictions"] == ("permit_mynetworks, permit_sasl_authenticated, "
                                                               "reject_unauth_destination")
    assert facts["overrides"] == {"submission/inet": {"mynetworks": "0.0.0.0/0"}}
    assert "pw-Facts-1" not in recorded.read_text()
    finding = check_open_relay(facts, relay_enabled=True)
    assert finding is not None and finding.status == "problem" and "submission (master.cf)" in finding.summary
    # With the override gone, the next task run records a closed relay.
    (etc / "master.cf").write_text((etc / "master.cf").read_text().replace("  -o mynetworks=0.0.0.0/0\n", ""))
    assert run_relay(data, "task", etc).returncode == 0
    finding = check_open_relay(load_facts(Paths(data)), relay_enabled=True)
    assert finding is not None and finding.status == "ok", finding
