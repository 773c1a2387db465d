"""The CLI contract: commands, exit codes 0/1/2, messages."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from smartpop import __version__
from smartpop.cli import main


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command: help and exit 2."""
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong command: exit 2 and a message that points at --help."""
    assert main(["--data", str(tmp_path), "frobnicate"]) == 2
    assert "--help" in capsys.readouterr().err


def test_no_data_dir_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """No --data, no SMARTPOP_DATA, no SYNOPKG_PKGVAR: exit 2, naming all three."""
    monkeypatch.delenv("SMARTPOP_DATA", raising=False)
    monkeypatch.delenv("SYNOPKG_PKGVAR", raising=False)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "SMARTPOP_DATA" in err


def test_data_dir_from_env(configured_data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """$SYNOPKG_PKGVAR is honoured when nothing else is given."""
    monkeypatch.delenv("SMARTPOP_DATA", raising=False)
    monkeypatch.setenv("SYNOPKG_PKGVAR", str(configured_data_dir))
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == __version__


def test_status_json_reports_accounts_without_secrets(configured_data_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """status --json: per-account fields and relay state; no password anywhere."""
    assert main(["--data", str(configured_data_dir), "status", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    account = report["accounts"][0]
    assert account["name"] == "sammelpostfach"
    for key in ("last_run", "last_success", "collected", "fallback", "last_error", "waiting"):
        assert key in account
    assert "state" in report["relay"]
    assert "s3cret" not in out


def test_status_with_broken_config_exits_2(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config is reported, and the exit code says 'fix the configuration'."""
    (data_dir / "config.json").write_text('{"accounts": [], "colour": 1}')
    assert main(["--data", str(data_dir), "status"]) == 2
    assert "colour" in capsys.readouterr().out


def test_wizard_config_writes_private_config(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """wizard-config turns env vars into config.json (0600) and never prints a secret."""
    for key, value in {"wizard_fetch_host": "pop.gmx.net", "wizard_fetch_port": "995",
                       "wizard_fetch_security": "ssl", "wizard_fetch_protocol": "pop3",
                       "wizard_fetch_user": "x@gmx.de", "wizard_fetch_password": "Geheim-123",
                       "wizard_local_domains": "firma.de", "wizard_fallback_recipient": "pm@firma.de",
                       "wizard_relay_enable": "false", "wizard_web_port": "8766"}.items():
        monkeypatch.setenv(key, value)
    assert main(["--data", str(data_dir), "wizard-config"]) == 0
    out = capsys.readouterr()
    assert "Geheim-123" not in out.out + out.err
    assert out.out.strip().endswith("web_port=8766")
    config = data_dir / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["accounts"][0]["password"] == "Geheim-123"


def test_wizard_config_rejects_invalid_answers(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A bad wizard value: exit 2, the key named, nothing written."""
    monkeypatch.setenv("wizard_fetch_host", "pop.gmx.net")
    monkeypatch.setenv("wizard_fetch_user", "x@gmx.de")
    monkeypatch.setenv("wizard_fetch_port", "0")
    monkeypatch.setenv("wizard_local_domains", "firma.de")
    monkeypatch.setenv("wizard_fallback_recipient", "pm@firma.de")
    assert main(["--data", str(data_dir), "wizard-config"]) == 2
    assert "accounts[0].port" in capsys.readouterr().err
    assert not (data_dir / "config.json").exists()
