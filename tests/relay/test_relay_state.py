"""The relay state is true at every moment, and no relay command touches a Postfix it was not given."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from support.postfix_relay import config_digest, have_postfix, mailplus_like_dir, run_relay, tree_digest, write_config
from support.relay_bundle import root_task_argv

pytestmark = pytest.mark.skipif(not have_postfix(), reason="needs root and the postfix tools")
ENABLED = {"enabled": True, "host": "smtp.provider.test", "port": 587, "security": "starttls",
           "username": "anna@firma.test", "password": "main-pw"}


def _etc(tmp_path: Path) -> Path:
    return mailplus_like_dir(tmp_path / "etc")


def _state(data: Path, etc: Path) -> Dict[str, Any]:
    proc = run_relay(data, "status", etc, "--json")
    assert proc.returncode == 0, proc.stderr
    report: Dict[str, Any] = json.loads(proc.stdout)
    return report


def test_a_rollback_with_nothing_to_do_leaves_the_state_disabled_not_pending(tmp_path: Path) -> None:
    etc, data = _etc(tmp_path), tmp_path / "data"
    write_config(data, {"enabled": False})
    assert _state(data, etc)["state"] == "disabled"
    proc = run_relay(data, "rollback", etc)
    assert proc.returncode == 0 and "nothing to roll back" in proc.stdout
    assert _state(data, etc)["state"] == "disabled"


def test_state_follows_apply_disable_task_and_rollback(tmp_path: Path) -> None:
    etc, data = _etc(tmp_path), tmp_path / "data"
    before = config_digest(etc)
    write_config(data, ENABLED)
    assert _state(data, etc)["state"] == "pending"
    assert run_relay(data, "task", etc).returncode == 0
    assert _state(data, etc)["state"] == "applied"
    write_config(data, dict(ENABLED, enabled=False))
    assert _state(data, etc)["state"] == "pending"  # true: the task still has to remove the block
    assert run_relay(data, "task", etc).returncode == 0
    assert _state(data, etc)["state"] == "disabled"
    assert run_relay(data, "rollback", etc).returncode == 0
    assert _state(data, etc)["state"] == "disabled"
    assert config_digest(etc) == before


@pytest.mark.parametrize("action", ["plan", "apply", "task", "verify", "rollback"])
def test_without_mailplus_the_machines_own_postfix_is_never_the_default(tmp_path: Path, action: str) -> None:
    data = tmp_path / "data"
    write_config(data, ENABLED)
    system = Path("/etc/postfix")
    before = tree_digest(system) if system.is_dir() else {}
    proc = subprocess.run(root_task_argv(data, action), capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--postfix-dir" in proc.stderr and "MailPlus" in proc.stderr
    assert "/etc/postfix" not in proc.stdout
    assert (tree_digest(system) if system.is_dir() else {}) == before
