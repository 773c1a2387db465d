"""`smartpop doctor` (issue 13 §4): every fact, off DSM cleanly, on a fake DSM tree, with MailPlus's postconf."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Dict, List

import pytest

from smartpop.cli import main
from smartpop.doctor import facts, probes
from smartpop.paths import Paths

ROOT = Path(__file__).resolve().parent.parent
DSM_FACTS = ["dsm_version", "mailplus_version", "postfix_dir", "customize", "authenticate_cgi", "synotoken",
             "filters", "mynetworks", "skipped_checks"]
SECRETS = ["s3cret-Fetch!", "s3cret-Relay!", "web-secret-value-0123456789", "SynoTok3n-xyz"]


def _facts(out: str) -> Dict[str, Dict[str, Any]]:
    return {fact["id"]: fact for fact in json.loads(out)["facts"]}


def _snapshot(path: Path) -> Dict[str, Any]:
    return {str(p): (p.lstat().st_mtime_ns, p.lstat().st_uid, p.lstat().st_size) for p in [path, *path.rglob("*")]}


@pytest.fixture
def nas_data(configured_data_dir: Path) -> Path:
    """A data dir with every secret the package keeps, and a CGI record."""
    (configured_data_dir / "web.secret").write_text(SECRETS[2])
    (configured_data_dir / "cgi-auth.json").write_text(json.dumps(
        {"time": "2026-11-30 10:00:00", "user": "SmartPop", "token": "url", "result": "admin",
         "synotoken": SECRETS[3]}))
    return configured_data_dir


def test_off_dsm_every_dsm_fact_says_so_and_nothing_secret_shows(nas_data: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(nas_data), "doctor", "--json"]) == 0
    out = capsys.readouterr().out
    found = _facts(out)
    for id_ in DSM_FACTS:
        assert found[id_]["value"] == facts.NOT_DSM and found[id_]["status"] == facts.UNKNOWN, found[id_]
    assert found["config"]["status"] == facts.OK and "1 account" in found["config"]["value"]
    assert found["python"]["status"] == facts.OK
    assert main(["--data", str(nas_data), "doctor"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("SmartPop doctor (") and "[UNKNOWN] DSM version: not on a DSM NAS" in text
    for secret in SECRETS:
        assert secret not in out and secret not in text


def test_doctor_writes_nothing_into_data(nas_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(nas_data)
    assert main(["--data", str(nas_data), "doctor"]) == 0
    assert _snapshot(nas_data) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="root's view of the package user's DATA")
def test_root_may_run_doctor_on_the_package_data_and_writes_nothing(nas_data: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for path in [nas_data, *nas_data.iterdir()]:
        os.chown(path, 65534, 65534)
    before = _snapshot(nas_data)
    assert main(["--data", str(nas_data), "doctor", "--json"]) == 0
    found = _facts(capsys.readouterr().out)
    assert found["doctor_user"]["value"] == "root"
    assert found["data"]["value"].endswith("nobody 0700")
    assert found["data_files"]["status"] == facts.OK
    assert _snapshot(nas_data) == before
    assert main(["--data", str(nas_data), "fetch"]) == 2  # everything else stays refused for root
    assert _snapshot(nas_data) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_file_another_user_owns_is_a_warning(nas_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (nas_data / "smartpop.log").write_text("")
    os.chown(nas_data / "smartpop.log", 65534, -1)
    assert main(["--data", str(nas_data), "doctor", "--json"]) == 0
    found = _facts(capsys.readouterr().out)["data_files"]
    assert found["status"] == facts.WARN and found["value"].startswith("smartpop.log (nobody ")
    assert "chown -R root" in found["note"]


def test_doctor_runs_on_a_broken_config_and_a_missing_data_dir(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.json").write_text('{"accounts": [], "colour": 1}')
    assert main(["--data", str(data), "doctor", "--json"]) == 0
    found = _facts(capsys.readouterr().out)
    assert found["config"]["status"] == facts.WARN and "colour" in found["config"]["value"]
    assert main(["--data", str(tmp_path / "missing"), "doctor", "--json"]) == 0
    assert _facts(capsys.readouterr().out)["data"]["status"] == facts.WARN
    assert not (tmp_path / "missing").exists()


def _fake_dsm(root: Path, customize: bool = True) -> None:
    (root / "etc.defaults").mkdir(parents=True)
    (root / "etc.defaults/VERSION").write_text(
        'majorversion="7"\nminorversion="2"\nproductversion="7.2.1"\nbuildphase="GM"\nbuildnumber="69057"\n'
        'smallfixnumber="5"\n')
    mailplus = root / "var/packages/MailPlus-Server"
    (mailplus / "target/etc").mkdir(parents=True)
    (mailplus / "INFO").write_text('package="MailPlus-Server"\nversion="3.3.0-21505"\n')
    if customize:
        (mailplus / "etc/customize/postfix").mkdir(parents=True)
        (mailplus / "etc/customize/postfix/main.cf").write_text("# local\n")
    for cgi in probes.DSM_CGIS.values():
        (root / cgi).parent.mkdir(parents=True, exist_ok=True)
        (root / cgi).write_text("#!/bin/sh\n")


def test_on_a_fake_dsm_the_facts_are_read(nas_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "dsm"
    _fake_dsm(root)
    data = facts.report(probes.collect(Paths(nas_data), root=root))
    found = {fact["id"]: fact for fact in data["facts"]}
    assert data["on_dsm"] is True
    assert found["dsm_version"]["value"] == "7.2.1-69057 Update 5" and found["dsm_version"]["status"] == facts.OK
    assert found["mailplus_version"]["value"] == "3.3.0-21505"
    assert found["customize"]["status"] == facts.OK and found["customize"]["value"].endswith("postfix: main.cf")
    assert found["postfix_dir"]["status"] == facts.WARN  # main.cf/master.cf missing in the fake tree
    assert found["authenticate_cgi"]["status"] == facts.OK and "admin" in found["authenticate_cgi"]["value"]
    assert found["synotoken"]["status"] == facts.OK and found["synotoken"]["value"].startswith("in the page's URL")
    assert found["cgi_user"]["value"] == "SmartPop"
    assert SECRETS[3] not in json.dumps(data)  # only whitelisted fields of the CGI record


def test_a_dsm_without_mailplus_is_a_warning(configured_data_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dsm"
    _fake_dsm(root, customize=False)
    (root / "var/packages/MailPlus-Server/INFO").unlink()
    found = {f.id: f for f in facts.build_facts(probes.collect(Paths(configured_data_dir), root=root))}
    assert found["mailplus_version"].status == facts.WARN
    assert found["customize"].value == "absent"
    assert found["authenticate_cgi"].status == facts.UNKNOWN  # present, but no request recorded yet


POSTCONF = shutil.which("postconf", path="/usr/sbin:/usr/bin:/sbin:/bin")
MAIN_CF = """compatibility_level = 3.6
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_milters = inet:127.0.0.1:11332
smtpd_sender_restrictions = permit_mynetworks, reject_sender_login_mismatch, check_sender_access hash:/x/access
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, reject_rbl_client zen.spamhaus.org
"""


def _postfix_dir(tmp_path: Path, main_cf: str, master_extra: str = "") -> Path:
    directory = tmp_path / "postfix"
    directory.mkdir()
    (directory / "main.cf").write_text(main_cf)
    (directory / "master.cf").write_text(
        "smtp      inet  n       -       y       -       -       smtpd\n" + master_extra
        + "pickup    unix  n       -       y       60      1       pickup\n")
    return directory


@pytest.mark.skipif(POSTCONF is None, reason="postconf (Postfix) is not installed")
def test_mailplus_filters_and_the_checks_collected_mail_skips(configured_data_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    directory = _postfix_dir(tmp_path, MAIN_CF)
    assert main(["--data", str(configured_data_dir), "doctor", "--json", "--postfix-dir", str(directory)]) == 0
    found = _facts(capsys.readouterr().out)
    assert found["filters"]["status"] == facts.OK
    value = found["filters"]["value"]
    assert "smtpd_milters = inet:127.0.0.1:11332" in value and "smtp/inet" in value
    assert found["mynetworks"]["status"] == facts.WARN and found["mynetworks"]["value"].startswith("yes")
    skipped = found["skipped_checks"]
    assert skipped["status"] == facts.WARN
    assert "reject_sender_login_mismatch" in skipped["value"]
    assert "check_sender_access hash:/x/access" in skipped["value"]
    assert "reject_rbl_client zen.spamhaus.org" in skipped["value"]
    assert "reject_unauth_destination" not in skipped["value"]  # SmartPop's recipients are local anyway


@pytest.mark.skipif(POSTCONF is None, reason="postconf (Postfix) is not installed")
def test_a_master_cf_override_that_drops_the_milter_on_port_25_is_a_warning(
        configured_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = _postfix_dir(tmp_path, MAIN_CF.replace("127.0.0.0/8 [::1]/128", "192.168.0.0/16"),
                             "  -o smtpd_milters=\n")
    assert main(["--data", str(configured_data_dir), "doctor", "--json", "--postfix-dir", str(directory)]) == 0
    found = _facts(capsys.readouterr().out)
    assert found["filters"]["status"] == facts.WARN and "no content_filter" in found["filters"]["value"]
    assert found["mynetworks"]["status"] == facts.OK and found["mynetworks"]["value"].startswith("no")
    assert found["skipped_checks"]["value"] == "none"


@pytest.mark.parametrize("value, expected", [
    ("permit_mynetworks, reject_unauth_destination", []),
    ("reject_rbl_client zen.spamhaus.org, permit_mynetworks", []),
    ("permit_sasl_authenticated permit_mynetworks reject_unknown_sender_domain, check_policy_service unix:p",
     ["reject_unknown_sender_domain", "check_policy_service unix:p"]),
    ("", []),
])
def test_skipped_for_mynetworks(value: str, expected: List[str]) -> None:
    assert facts.skipped_for_mynetworks(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.0/8 [::1]/128", True), ("127.0.0.1", True), ("192.168.0.0/16, 10.0.0.0/8", False),
    ("hash:/etc/postfix/networks", None), ("/etc/postfix/networks 10.0.0.0/8", None), ("", False),
])
def test_network_covers_loopback(value: str, expected: Any) -> None:
    assert facts.network_covers(value, "127.0.0.1") is expected


def _load_cgi() -> Any:
    loader = importlib.machinery.SourceFileLoader("smartpop_index_cgi_doctor", str(ROOT / "ui" / "index.cgi"))
    spec = importlib.util.spec_from_loader("smartpop_index_cgi_doctor", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_index_cgi_records_how_it_authenticated_without_names_or_tokens(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cgi = _load_cgi()
    data = tmp_path / "var"
    data.mkdir()
    monkeypatch.setattr(cgi, "DATA", str(data))
    uid = os.stat(data).st_uid
    monkeypatch.setattr(cgi.os, "geteuid", lambda: uid if uid else 65534)
    if uid == 0:
        os.chown(data, 65534, -1)
    cgi.record_auth("url", "admin")
    record_file = data / "cgi-auth.json"
    record = json.loads(record_file.read_text())
    assert set(record) == {"time", "user", "token", "result"}
    assert record["token"] == "url" and record["result"] == "admin"
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
    assert [p.name for p in data.iterdir()] == ["cgi-auth.json"]  # no temp file left
    snapshot = probes.cgi_record(Paths(data))
    assert snapshot["result"] == "admin" and snapshot["token"] == "url"


def test_index_cgi_writes_nothing_as_root_or_as_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cgi = _load_cgi()
    data = tmp_path / "var"
    data.mkdir()
    monkeypatch.setattr(cgi, "DATA", str(data))
    owner = os.stat(data).st_uid
    for euid in (0, owner + 1):
        monkeypatch.setattr(cgi.os, "geteuid", lambda e=euid: e)
        cgi.record_auth("header", "admin")
        assert list(data.iterdir()) == []
