"""Issue 13 §3: the relay survives MailPlus. SmartPop's maps live outside MailPlus's target/ in a
root-owned dir, the block also goes into MailPlus's customize override when it exists, a foreign
or symlinked maps dir is refused, and an installation with the old layout (maps in target/etc)
moves over on the next task run with a byte-identical rollback. All through the bundle's CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from support.postfix_relay import (
    REPO,
    config_digest,
    customize_dir_for,
    have_postfix,
    mailplus_like_dir,
    maps_dir_for,
    run_relay,
    smartpop_env,
    tree_digest,
    write_config,
)
from support.relay_bundle import root_task_argv

pytestmark = pytest.mark.skipif(not have_postfix(), reason="needs root and the postfix tools")
MAP_NAMES = ("smartpop_sasl_passwd", "smartpop_sender_relay", "smartpop_sender_transport")
RELAY = {"enabled": True, "host": "smtp.provider.test", "port": 587, "security": "starttls",
         "username": "anna@firma.test", "password": "main-pw",
         "sender_relays": [{"sender": "@zweit.test", "host": "mail.zweit.test", "port": 465,
                            "security": "ssl", "username": "bob@zweit.test", "password": "other-pw"}]}
# The last commit whose relay kept its maps in the Postfix dir (the layout before this change).
OLD_LAYOUT_COMMIT = "2082f65"
CUSTOM_MAIN = b"# MailPlus customize override (stand-in)\nmessage_size_limit = 52428800\n"


def _status(data: Path, etc: Path) -> Dict[str, Any]:
    proc = run_relay(data, "status", etc, "--json")
    assert proc.returncode == 0, proc.stderr
    report: Dict[str, Any] = json.loads(proc.stdout)
    return report


def _postconf(etc: Path, *names: str) -> Dict[str, str]:
    out = subprocess.run(["postconf", "-c", str(etc), *names], capture_output=True, text=True, check=True).stdout
    return {line.partition(" = ")[0]: line.partition(" = ")[2] for line in out.splitlines()}


def _assert_maps_root_only(maps: Path) -> None:
    info = os.lstat(maps)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o700
    for name in MAP_NAMES:
        for path in (maps / name, maps / (name + ".db")):
            file_info = os.lstat(path)
            assert stat.S_ISREG(file_info.st_mode) and file_info.st_uid == 0, path
            assert stat.S_IMODE(file_info.st_mode) == 0o600, path


def test_maps_live_outside_the_postfix_dir_and_postfix_uses_them(tmp_path: Path) -> None:
    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    maps = maps_dir_for(etc)
    before = config_digest(etc)
    write_config(data, RELAY)
    proc = run_relay(data, "apply", etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [p.name for p in etc.iterdir() if p.name.startswith("smartpop_")]  # nothing in MailPlus's dir
    _assert_maps_root_only(maps)
    live = _postconf(etc, "smtp_sasl_password_maps", "sender_dependent_relayhost_maps",
                     "sender_dependent_default_transport_maps")
    assert live == {"smtp_sasl_password_maps": f"hash:{maps}/smartpop_sasl_passwd",
                    "sender_dependent_relayhost_maps": f"hash:{maps}/smartpop_sender_relay",
                    "sender_dependent_default_transport_maps": f"hash:{maps}/smartpop_sender_transport"}
    # Postfix's own lookup through the path main.cf names finds the entries in the built index.
    looked = subprocess.run(["postmap", "-c", str(etc), "-q", "@zweit.test", f"hash:{maps}/smartpop_sender_relay"],
                            capture_output=True, text=True, check=True).stdout
    assert looked.strip() == "[mail.zweit.test]:465"
    assert "main-pw" not in (etc / "main.cf").read_text()
    report = _status(data, etc)
    assert report["state"] == "applied" and report["mechanism"] == "reapply" and report["maps_dir"] == str(maps)
    assert "main-pw" not in json.dumps(report)
    assert run_relay(data, "verify", etc).returncode == 0
    assert run_relay(data, "rollback", etc).returncode == 0
    assert config_digest(etc) == before and not maps.exists()


def _upgrade_mailplus(etc: Path, originals: Path) -> None:
    """What a MailPlus upgrade does to target/etc: the whole dir comes back as shipped."""
    shutil.rmtree(etc)
    shutil.copytree(originals, etc)


def test_a_mailplus_upgrade_loses_nothing_and_the_next_task_restores_the_relay(tmp_path: Path) -> None:
    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    originals = tmp_path / "shipped"
    shutil.copytree(etc, originals)
    maps = maps_dir_for(etc)
    before = config_digest(etc)
    write_config(data, RELAY)
    assert run_relay(data, "task", etc).returncode == 0
    maps_before = tree_digest(maps)
    _upgrade_mailplus(etc, originals)
    assert tree_digest(maps) == maps_before  # the password maps survived the upgrade
    assert _status(data, etc)["state"] in ("drift", "pending")
    assert run_relay(data, "verify", etc).returncode == 1
    proc = run_relay(data, "task", etc)
    assert proc.returncode == 0 and "re-applied after drift" in proc.stdout, proc.stdout + proc.stderr
    assert run_relay(data, "verify", etc).returncode == 0
    assert _status(data, etc)["state"] == "applied"
    # The map sources are untouched; postmap rebuilds the indexes on every apply (not byte-stable).
    assert {k: v for k, v in tree_digest(maps).items() if not k.endswith(".db")} == \
        {k: v for k, v in maps_before.items() if not k.endswith(".db")}
    assert (etc / "main.cf").read_text().count("BEGIN SMARTPOP") == 1
    assert run_relay(data, "rollback", etc).returncode == 0
    assert config_digest(etc) == before


def test_customize_override_gets_the_block_and_rollback_is_byte_identical(tmp_path: Path) -> None:
    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    customize = customize_dir_for(etc)
    customize.mkdir(parents=True)
    (customize / "main.cf").write_bytes(CUSTOM_MAIN)
    (customize / "main.cf").chmod(0o644)
    before = config_digest(etc)
    write_config(data, RELAY)
    assert _status(data, etc)["mechanism"] == "customize"
    proc = run_relay(data, "apply", etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    custom = (customize / "main.cf").read_bytes()
    assert custom.startswith(CUSTOM_MAIN) and custom.count(b"BEGIN SMARTPOP") == 1
    main_block = (etc / "main.cf").read_bytes().split(b"# BEGIN SMARTPOP", 1)[1]
    assert custom.split(b"# BEGIN SMARTPOP", 1)[1] == main_block  # the same block in both
    assert stat.S_IMODE((customize / "main.cf").stat().st_mode) == 0o644
    assert b"main-pw" not in custom
    report = _status(data, etc)
    assert report["state"] == "applied" and report["mechanism"] == "customize"
    assert run_relay(data, "verify", etc).returncode == 0
    # MailPlus loses the override's block (say, its UI rewrote the file): verify and the task see it.
    (customize / "main.cf").write_bytes(CUSTOM_MAIN)
    assert run_relay(data, "verify", etc).returncode == 1
    assert run_relay(data, "task", etc).returncode == 0
    assert (customize / "main.cf").read_bytes() == custom
    assert run_relay(data, "rollback", etc).returncode == 0
    assert config_digest(etc) == before  # Postfix dir and customize dir byte-identical, maps gone


def test_without_an_override_main_cf_the_customize_dir_is_left_alone(tmp_path: Path) -> None:
    # Whether MailPlus merges or replaces with customize/postfix/main.cf is unconfirmed: never create it.
    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    customize_dir_for(etc).mkdir(parents=True)
    write_config(data, RELAY)
    assert run_relay(data, "apply", etc).returncode == 0
    assert list(customize_dir_for(etc).iterdir()) == []
    assert _status(data, etc)["mechanism"] == "reapply"


@pytest.mark.parametrize("plant", ["symlink", "foreign_dir", "group_writable"])
def test_a_planted_maps_dir_is_refused(tmp_path: Path, plant: str) -> None:
    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    maps = maps_dir_for(etc)
    if plant == "symlink":
        maps.symlink_to(outside)
    else:
        maps.mkdir()
        if plant == "foreign_dir":
            os.chown(maps, 65534, 65534)
        else:
            maps.chmod(0o770)
    write_config(data, RELAY)
    before = tree_digest(tmp_path / "etc"), tree_digest(outside)
    for action in ("apply", "task", "rollback"):
        proc = run_relay(data, action, etc)
        assert proc.returncode == 1 and f"refusing the maps dir {maps}" in proc.stderr, (action, proc.stderr)
    assert (tree_digest(tmp_path / "etc"), tree_digest(outside)) == before
    assert os.path.islink(maps) or not list(maps.iterdir())


@pytest.fixture(scope="module")
def old_bundle() -> Iterator[Path]:
    """The relay bundle of the release before this change (maps inside the Postfix dir)."""
    import filelock

    if shutil.which("git") is None or subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", OLD_LAYOUT_COMMIT],
                                                      capture_output=True).returncode != 0:
        pytest.skip(f"needs git and commit {OLD_LAYOUT_COMMIT} to build the old relay")
    work = Path(tempfile.mkdtemp(prefix="smartpop-old-"))
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_LAYOUT_COMMIT, "package/smartpop",
                                  "tools/relay_bundle.py", "tools/relay_bundle_stub.py"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        out = work / "smartpop-relay.py"
        subprocess.run(["/usr/bin/python3", str(work / "tools" / "relay_bundle.py"), str(work / "package"), str(out),
                        str(Path(filelock.__file__).resolve().parent.parent)], capture_output=True, check=True)
        work.chmod(0o755)
        yield out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_an_installation_with_the_old_layout_moves_on_the_next_task(tmp_path: Path, old_bundle: Path) -> None:
    etc, data = mailplus_like_dir(tmp_path / "etc"), tmp_path / "data"
    maps = maps_dir_for(etc)
    before = config_digest(etc)
    write_config(data, RELAY)
    old = subprocess.run(root_task_argv(data, "task", "--postfix-dir", str(etc), bundle=old_bundle),
                         capture_output=True, text=True, env=smartpop_env(), timeout=120)
    assert old.returncode == 0, old.stdout + old.stderr
    assert (etc / "smartpop_sasl_passwd").is_file() and (etc / "smartpop_sasl_passwd.db").is_file()
    assert _postconf(etc, "smtp_sasl_password_maps")["smtp_sasl_password_maps"] == f"hash:{etc}/smartpop_sasl_passwd"
    assert _status(data, etc)["state"] == "pending"  # the new code has not moved the maps yet
    assert run_relay(data, "verify", etc).returncode == 1

    proc = run_relay(data, "task", etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [p.name for p in etc.iterdir() if p.name.startswith("smartpop_")]  # old maps removed
    _assert_maps_root_only(maps)
    assert _postconf(etc, "smtp_sasl_password_maps")["smtp_sasl_password_maps"] == f"hash:{maps}/smartpop_sasl_passwd"
    assert (etc / "main.cf").read_text().count("BEGIN SMARTPOP") == 1
    assert run_relay(data, "verify", etc).returncode == 0
    assert _status(data, etc)["state"] == "applied"
    # The first (old) apply's checkpoint still holds MailPlus's originals.
    assert run_relay(data, "rollback", etc).returncode == 0
    assert config_digest(etc) == before and not maps.exists()
