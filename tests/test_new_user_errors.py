"""Errors a new user hits (issue 13 §5): one line and exit 2 where the contract promises it, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from smartpop.cli import main
from smartpop.log import redact, register_secrets
from support.ports import free_ports
from support.samples import sample_document

OTHER_UID = 65534  # nobody


def _run(capsys: pytest.CaptureFixture[str], argv: List[str]) -> Tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("smartpop: ")
    return lines[0]


def _tree(path: Path) -> List[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("command", [["status"], ["fetch"], ["check"], ["serve"], ["relay", "plan"]])
def test_data_pointing_at_a_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        command: List[str]) -> None:
    target = tmp_path / "config.json"
    target.write_text(json.dumps(sample_document()))
    code, _, err = _run(capsys, ["--data", str(target), *command])
    assert code == 2
    line = _one_line(err)
    assert str(target) in line and "is a file, not a directory" in line and "--data" in line


@pytest.mark.parametrize("command", [["status"], ["fetch"], ["check"], ["serve", "--dev"], ["relay", "plan"],
                                     ["relay", "request-rollback"]])
def test_a_mistyped_data_dir_leaves_nothing_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   command: List[str]) -> None:
    before = _tree(tmp_path)
    for wrong in (tmp_path / "sp-dta", tmp_path / "no" / "such" / "dir"):
        code, _, err = _run(capsys, ["--data", str(wrong), *command])
        assert code == 2
        line = _one_line(err)
        assert str(wrong) in line and "does not exist" in line and "mkdir" in line
    assert _tree(tmp_path) == before


def test_only_wizard_config_creates_a_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTPOP_DATA", str(tmp_path / "typo"))
    code, _, err = _run(capsys, ["status"])
    assert code == 2 and "$SMARTPOP_DATA" in _one_line(err)  # names where the wrong path came from
    assert not (tmp_path / "typo").exists()
    # postinst creates DATA and then runs wizard-config; that one command may still create it.
    monkeypatch.setenv("wizard_fetch_host", "pop.gmx.net")
    monkeypatch.setenv("wizard_fetch_user", "x@gmx.de")
    monkeypatch.setenv("wizard_local_domains", "firma.de")
    monkeypatch.setenv("wizard_fallback_recipient", "pm@firma.de")
    code, _, _ = _run(capsys, ["--data", str(tmp_path / "var"), "wizard-config"])
    assert code == 0 and (tmp_path / "var" / "config.json").is_file()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir another user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="smartpop-errors-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _configured(base: Path) -> Path:
    data = base / "data"
    data.mkdir(mode=0o700)
    (data / "config.json").write_text(json.dumps(sample_document()))
    (data / "config.json").chmod(0o600)
    return data


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
@pytest.mark.parametrize("name", ["config.json", "state.sqlite3", "smartpop.log", "locks", "locks/sammelpostfach.lock"])
@pytest.mark.parametrize("command", [["status"], ["fetch"], ["serve"]])
def test_a_file_in_data_owned_by_another_user_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, command: List[str]) -> None:
    data = _configured(tmp_path)
    (data / "locks").mkdir(mode=0o700)
    path = data / name
    if not path.exists():
        path.write_bytes(b"")
    os.chown(path, OTHER_UID, -1)
    code, _, err = _run(capsys, ["--data", str(data), *command])
    assert code == 2
    line = _one_line(err)
    assert str(path) in line and "belongs to" in line and "chown -R" in line


def _as_other_user(uid: int, call: Callable[[], int]) -> Tuple[int, str]:
    """Run `call` in a child process as `uid` (root drops to it; others run as themselves)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        sys.stderr = open(write_fd, "w", encoding="utf-8")  # pytest captured the old one
        code = 99
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            code = call()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "r") as handle:
        err = handle.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8, err


@pytest.mark.parametrize("name", ["config.json", "state.sqlite3"])
def test_an_unreadable_file_in_data_is_one_line_and_exit_2(shared_tmp: Path, name: str) -> None:
    import smartpop.collector.commands  # noqa: F401  (imported before the child drops privileges)

    data = _configured(shared_tmp)
    path = data / name
    if not path.exists():
        path.write_bytes(b"")
    uid = OTHER_UID if os.geteuid() == 0 else os.geteuid()
    for entry in [data, *data.iterdir()]:
        if os.geteuid() == 0:
            os.chown(entry, uid, uid)
    path.chmod(0)
    code, err = _as_other_user(uid, lambda: main(["--data", str(data), "fetch"]))
    assert code == 2, err
    line = _one_line(err)
    assert str(path) in line and "not readable" in line and "chmod" in line


def test_dev_port_in_use_is_one_line_and_exit_2(configured_data_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    port = free_ports(1)[0]
    document = sample_document()
    document["web"]["port"] = port
    (configured_data_dir / "config.json").write_text(json.dumps(document))
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    try:
        started = time.monotonic()
        code, _, err = _run(capsys, ["--data", str(configured_data_dir), "serve", "--dev"])
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert code == 2
    line = _one_line(err)
    assert f"127.0.0.1:{port}" in line and "web.port" in line and "already in use" in line
    assert elapsed < 10  # refused before the collector started (its stop waits for workers)


def test_backend_socket_in_use_is_one_line_and_exit_2(shared_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _configured(shared_tmp)
    run = data / "run"
    run.mkdir(mode=0o700)
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.bind(str(run / "web.sock"))
    holder.listen(1)
    try:
        code, _, err = _run(capsys, ["--data", str(data), "serve"])
    finally:
        holder.close()
    assert code == 2
    line = _one_line(err)
    assert str(run / "web.sock") in line and "already listening" in line
    # Refused before the collector started (it would have begun fetching, then had to be stopped).
    log = data / "smartpop.log"
    assert "collector daemon started" not in (log.read_text() if log.exists() else "")


def test_fetch_without_accounts_says_so(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data_dir / "config.json").write_text(json.dumps({"schema_version": 1, "accounts": []}))
    code, out, err = _run(capsys, ["--data", str(data_dir), "fetch"])
    # 0, not 2: an empty account list is a valid config (status exits 0 for it too), and a
    # scheduled fetch must not report a failure; but it says why nothing happened.
    assert code == 0
    assert out.startswith("no accounts configured: nothing to fetch") and "Accounts" in out
    document = sample_document()
    document["accounts"][0]["enabled"] = False
    (data_dir / "config.json").write_text(json.dumps(document))
    code, out, _ = _run(capsys, ["--data", str(data_dir), "fetch"])
    assert code == 0 and out.startswith("every account is disabled: nothing to fetch")


def test_web_port_as_text_is_normalised_with_a_note(configured_data_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    document = sample_document()
    document["web"]["port"] = "8766"
    (configured_data_dir / "config.json").write_text(json.dumps(document))
    code, _, err = _run(capsys, ["--data", str(configured_data_dir), "status"])
    assert code == 0
    assert "web.port: '8766' is text; read it as the number 8766" in err
    assert json.loads((configured_data_dir / "config.json").read_text())["web"]["port"] == 8766
    code, _, err = _run(capsys, ["--data", str(configured_data_dir), "status"])
    assert code == 0 and "is text" not in err  # noted once: the file now holds the number
    for value in ("eighty", "8765.0", "-1", ""):  # anything but digits is still refused, naming the key
        document["web"]["port"] = value
        (configured_data_dir / "config.json").write_text(json.dumps(document))
        code, _, err = _run(capsys, ["--data", str(configured_data_dir), "fetch"])
        assert code == 2
        assert _one_line(err).startswith("smartpop: web.port: must be a whole number from 1025 to 65535")


def test_an_unknown_key_auth_is_not_redacted(configured_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = sample_document()
    document["delivery"]["auth"] = "plain"  # accounts have `auth` since issue 18; delivery has none
    (configured_data_dir / "config.json").write_text(json.dumps(document))
    for command in (["check"], ["fetch"], ["status"]):
        code, out, err = _run(capsys, ["--data", str(configured_data_dir), *command])
        assert code == 2
        assert "delivery.auth: is not a known setting" in out + err
        assert "********" not in out + err


def test_a_wrong_auth_value_is_named_not_redacted(configured_data_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`auth` became a setting (issue 18): a wrong value is shown, since "auth: plain" is no secret."""
    document = sample_document()
    document["accounts"][0]["auth"] = "plain"
    (configured_data_dir / "config.json").write_text(json.dumps(document))
    for command in (["check"], ["fetch"], ["status"]):
        code, out, err = _run(capsys, ["--data", str(configured_data_dir), *command])
        assert code == 2
        assert "accounts[0].auth: must be one of password, oauth2, got 'plain'" in out + err
        assert "********" not in out + err
    for name in ("auth", "password", "token", "secret"):
        document = {"schema_version": 1, name: "x"}
        (configured_data_dir / "config.json").write_text(json.dumps(document))
        code, _, err = _run(capsys, ["--data", str(configured_data_dir), "check"])
        assert code == 2 and f"smartpop: {name}: is not a known setting" in err


def test_redaction_still_masks_secrets_and_secret_bearing_keys() -> None:
    register_secrets(["Registered-Secret-77"])
    assert redact("login with Registered-Secret-77 failed") == "login with ******** failed"
    assert redact("password=hunter2") == "password=********"
    assert redact("auth: hunter2") == "auth: ********"
    assert redact('{"token": "abc123"}') == '{"token": "********"}'
    assert redact("X-Auth-Token: abc123") == "X-Auth-Token: ********"
    assert redact("smtp.password=hunter2") == "smtp.password=********"
    assert redact("relay.sender_relays[0].password: is longer than 512 characters") == \
        "relay.sender_relays[0].password: is longer than 512 characters"
    assert redact("accounts[0].auth: is not a known setting") == "accounts[0].auth: is not a known setting"
