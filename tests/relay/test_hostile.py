"""A config.json written by a hostile package user, run through the real `smartpop relay apply` / `task`.

For every injection attempt: exit code 2 with a message naming the key, the Postfix dir and
the whole surrounding tree unchanged (apart from the CLI's own log/lock files in DATA), no
relay state written, no parameter added to `postconf -n`, and no command run (marker file).
Shell metacharacters that are legal in a password or user name are accepted and stay inert.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from support.postfix_relay import config_digest, have_postfix, maps_dir_for, run_relay, tree_digest, write_config

pytestmark = pytest.mark.skipif(not have_postfix(), reason="needs root and the postfix tools")
DATA = Path(__file__).resolve().parent.parent / "data" / "maincf"
# What the CLI itself may create in DATA on any run (log, locks, spool), never relay state.
CLI_BOOKKEEPING = ("data/smartpop.log", "data/locks", "data/spool", "data/config.json.lock")


def _base() -> Dict[str, Any]:
    return {"enabled": True, "host": "smtp.provider.test", "port": 587, "security": "starttls",
            "username": "anna@firma.test", "password": "main-pw",
            "sender_relays": [{"sender": "@zweit.test", "host": "mail.zweit.test", "port": 465,
                               "security": "ssl", "username": "bob@zweit.test", "password": "other-pw"}]}


def _sender(**over: Any) -> Dict[str, Any]:
    relay = _base()
    relay["sender_relays"][0].update(over)
    return relay


def _main(**over: Any) -> Dict[str, Any]:
    relay = _base()
    relay.update(over)
    return relay


def _cases(marker: Path) -> List[Tuple[str, Dict[str, Any], str]]:
    """(case id, relay section, key the error must name)."""
    sh = f"$(touch {marker})"
    semi = f";touch {marker};"
    smuggle = "\nalways_bcc = spy@evil.test\nmynetworks = 0.0.0.0/0"
    cases: List[Tuple[str, Dict[str, Any], str]] = []
    for name, value in [("host", "smtp.provider.test" + smuggle), ("host", "smtp.provider.test\r\nrelayhost = evil"),
                        ("host", "evil.test]:25, [other.test"), ("host", sh), ("host", semi),
                        ("host", "../../../etc/passwd"), ("host", "/etc/postfix/main.cf"), ("host", "a.test\x00b"),
                        # An IPv6 scope id: ipaddress accepts any text after '%' from Python 3.9 on.
                        ("host", "fe80::1%x ${mynetworks} #,"), ("host", "[fe80::1%eth0]"),
                        ("port", "587" + smuggle), ("port", "25 -o content_filter=x"), ("port", 0),
                        ("security", "starttls" + smuggle), ("security", "none"),
                        ("username", "anna" + smuggle), ("username", "anna:extra"), ("username", "anna pw"),
                        ("username", "a\x1bb"), ("password", "pw" + smuggle), ("password", "pw\x00"),
                        ("password", "pw\x7f"), ("password", " pw")]:
        cases.append((f"relay.{name}={value!r}"[:60], _main(**{name: value}), f"relay.{name}"))
    key = "relay.sender_relays[0]"
    for name, value in [("sender", "@zweit.test" + smuggle), ("sender", "../../../tmp/x@zweit.test"),
                        ("sender", f"`touch {marker}`@zweit.test"), ("sender", "a$(id)@zweit.test"),
                        ("sender", "#comment@zweit.test"), ("sender", "@zweit.test, always_bcc"),
                        ("host", "mail.zweit.test" + smuggle), ("host", semi),
                        ("host", "fe80::1%x ${mynetworks} #,"), ("port", "465\nmynetworks = 0.0.0.0/0"),
                        ("username", "bob" + smuggle), ("username", "bob:x"), ("password", "pw" + smuggle),
                        ("security", "ssl\nsmtp_tls_security_level = none")]:
        cases.append((f"{key}.{name}={value!r}"[:60], _sender(**{name: value}), f"{key}.{name}"))
    cases.append(("unknown relay key", dict(_base(), postfix_dir="/etc"), "relay.postfix_dir"))
    cases.append(("unknown sender key", _sender(smtp_tls_CAfile="/etc/shadow"), f"{key}.smtp_tls_CAfile"))
    cases.append(("sender_relays not a list", _main(sender_relays="@zweit.test mail.zweit.test"),
                  "relay.sender_relays"))
    return cases


def _setup(tmp_path: Path) -> Tuple[Path, Path, Path]:
    root = tmp_path / "tree"
    etc = root / "etc"
    etc.mkdir(parents=True)
    shutil.copy(DATA / "mailplus.cf", etc / "main.cf")
    shutil.copy("/etc/postfix/master.cf", etc / "master.cf")
    (root / "outside").mkdir()
    (root / "outside" / "keep.txt").write_text("a file a traversal might hit\n")
    return root, etc, root / "data"


def _changed(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    names = set(before) | set(after)
    return sorted(n for n in names if before.get(n) != after.get(n)
                  and not any(n == b or n.startswith(b + "/") for b in CLI_BOOKKEEPING))


def _postconf_n(etc: Path) -> str:
    return subprocess.run(["postconf", "-c", str(etc), "-n"], capture_output=True, text=True, check=True).stdout


def test_hostile_config_is_refused_by_apply_and_task(tmp_path: Path) -> None:
    root, etc, data = _setup(tmp_path)
    marker = root / "pwned"
    live_before = _postconf_n(etc)
    failures = []
    for case_id, relay, key in _cases(marker):
        write_config(data, relay)
        before = tree_digest(root)
        for action in ("apply", "task"):
            proc = run_relay(data, action, etc)
            output = proc.stdout + proc.stderr
            if proc.returncode != 2 or key not in output:
                failures.append(f"{case_id} {action}: exit {proc.returncode}, output {output.strip()[-200:]!r}")
            changed = _changed(before, tree_digest(root))
            if changed:
                failures.append(f"{case_id} {action}: files changed: {changed}")
        assert not marker.exists(), case_id
    assert failures == []
    assert _postconf_n(etc) == live_before
    assert not (data / "relay").exists()  # no checkpoint/state was written for a refused config


def test_shell_metacharacters_in_secrets_stay_inert(tmp_path: Path) -> None:
    root, etc, data = _setup(tmp_path)
    marker = root / "pwned"
    password = f"$(touch {marker});`touch {marker}`|touch {marker}&&x>{marker}"
    relay = _main(username=f"`touch${{IFS}}{marker}`", password=password)
    relay["sender_relays"][0]["password"] = f"';touch {marker};'"
    write_config(data, relay)
    etc_before = config_digest(etc)
    outside_before = tree_digest(root / "outside")
    params_before = set(_param_names(etc))
    proc = run_relay(data, "apply", etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not marker.exists()
    added = set(_param_names(etc)) - params_before
    from smartpop.relay.desired import WHITELIST

    assert added and added <= WHITELIST
    sasl = maps_dir_for(etc) / "smartpop_sasl_passwd"
    assert stat.S_IMODE(sasl.stat().st_mode) == 0o600
    assert f"smtp.provider.test]:587 `touch${{IFS}}{marker}`:{password}\n" in sasl.read_text()
    main_cf = (etc / "main.cf").read_text()
    assert password not in main_cf and "touch" not in main_cf  # secrets only in the 0600 map
    assert tree_digest(root / "outside") == outside_before
    # Nothing was written in the tree except the Postfix dir, the maps dir and DATA.
    assert sorted(p.name for p in root.iterdir()) == ["data", "etc", "outside", "smartpop-maps"]
    assert run_relay(data, "rollback", etc).returncode == 0
    assert config_digest(etc) == etc_before
    assert not marker.exists()


def _param_names(etc: Path) -> List[str]:
    return [line.partition(" = ")[0].strip() for line in _postconf_n(etc).splitlines()]


@pytest.mark.parametrize("plant", ["symlink", "foreign_dir"])
def test_planted_state_dir_is_not_trusted(tmp_path: Path, plant: str) -> None:
    # The package user owns DATA/relay: a symlinked or foreign-owned 'state' must never be used.
    root, etc, data = _setup(tmp_path)
    write_config(data, _base())
    relay_dir = data / "relay"
    relay_dir.mkdir()
    if plant == "symlink":
        (relay_dir / "state").symlink_to(root / "outside")
    else:
        (relay_dir / "state").mkdir()
        os.chown(relay_dir / "state", 65534, 65534)
    before = tree_digest(root)
    for action in ("apply", "rollback", "task"):
        proc = run_relay(data, action, etc)
        assert proc.returncode != 0 and "state" in proc.stderr, (action, proc.stdout, proc.stderr)
    assert _changed(before, tree_digest(root)) == []


def test_dsm_symlinked_data_dir_still_works(tmp_path: Path) -> None:
    # On DSM, /var/packages/SmartPop/var is a root-made symlink to /volumeN/@appdata/SmartPop.
    root, etc, real = _setup(tmp_path)
    write_config(real, _base())
    data = root / "var"
    data.symlink_to(real)
    before = config_digest(etc)
    proc = run_relay(data, "apply", etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (real / "relay" / "state" / "checkpoint" / "manifest.json").is_file()
    assert run_relay(data, "rollback", etc).returncode == 0
    assert config_digest(etc) == before


def _chown_tree(path: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, uid, uid)


def test_root_task_writes_nothing_into_the_package_users_data(tmp_path: Path) -> None:
    # As on DSM: DATA belongs to the package user and root runs the task. A root-owned lock,
    # log or spool there would lock the package out; only root's own state dir may appear.
    if os.geteuid() != 0:
        pytest.skip("needs root")
    package_uid = 65534
    root, etc, data = _setup(tmp_path)
    write_config(data, _base())
    _chown_tree(data, package_uid)
    for action in ("apply", "task", "rollback"):
        proc = run_relay(data, action, etc)
        assert proc.returncode == 0, (action, proc.stdout, proc.stderr)
    root_owned = sorted(str(p.relative_to(data)) for p in data.rglob("*")
                        if p.lstat().st_uid != package_uid and not str(p.relative_to(data)).startswith("relay/state"))
    assert root_owned == [], f"root created or took over files in DATA: {root_owned}"
    assert not (data / "smartpop.log").exists() and not (data / "config.json.lock").exists()


def test_root_task_refuses_a_symlinked_config(tmp_path: Path) -> None:
    # config.json pointing at a file only root may read: refused, and nothing of it is shown.
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root, etc, data = _setup(tmp_path)
    write_config(data, _base())
    secret = root / "outside" / "root-only.txt"
    secret.write_text("TOPSECRET-LINE\n")
    secret.chmod(0o600)
    (data / "config.json").unlink()
    (data / "config.json").symlink_to(secret)
    _chown_tree(data, 65534)
    before = tree_digest(etc)
    for action in ("apply", "task"):
        proc = run_relay(data, action, etc)
        assert proc.returncode == 2, (action, proc.stdout, proc.stderr)
        assert "symlink" in proc.stderr and "TOPSECRET" not in proc.stdout + proc.stderr
    assert tree_digest(etc) == before
