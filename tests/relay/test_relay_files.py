"""apply / verify / rollback on copies of realistic main.cf files with the real Postfix tools."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Dict

import pytest

from smartpop.errors import ConfigError, StateError
from smartpop.relay import maincf, patcher
from smartpop.relay import postfix as pf
from smartpop.relay.desired import WHITELIST, desired_from_relay
from smartpop.relay.layout import Layout

DATA = Path(__file__).resolve().parent.parent / "data" / "maincf"
FIXTURES = sorted(p.name for p in DATA.glob("*.cf"))
pytestmark = pytest.mark.skipif(shutil.which("postconf") is None, reason="postfix tools not installed")


class _Secret:
    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        return self._text


def _relay(**over: object) -> SimpleNamespace:
    sender = SimpleNamespace(sender="@other.test", host="smtp.other.test", port=465, security="ssl",
                             username="bob@other.test", password=_Secret("s3cret two"))
    base = dict(enabled=True, host="smtp.provider.test", port=587, security="starttls",
                username="anna@firma.test", password=_Secret("pa ss#1"), sender_relays=[sender])
    base.update(over)
    return SimpleNamespace(**base)


def _tree(directory: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def _setup(tmp: Path, fixture: str) -> Path:
    directory = tmp / "pf"
    directory.mkdir()
    shutil.copy(DATA / fixture, directory / "main.cf")
    shutil.copy("/etc/postfix/master.cf", directory / "master.cf")
    (tmp / "maps").mkdir(mode=0o700)
    return directory


def _layout(directory: Path) -> Layout:
    return Layout(directory, directory.parent / "maps", directory.parent / "customize")


@pytest.mark.parametrize("fixture", FIXTURES)
def test_roundtrip_without_block_is_byte_exact(fixture: str) -> None:
    data = (DATA / fixture).read_bytes()
    text = maincf.decode(data)
    assert maincf.encode_bytes(maincf.with_block(maincf.with_block(text, ["a = b"]), [])) == data


@pytest.mark.parametrize("fixture", FIXTURES)
def test_apply_verify_idempotent_drift_rollback(tmp_path: Path, fixture: str) -> None:
    directory = _setup(tmp_path, fixture)
    relay_dir = tmp_path / "relay"
    tools = pf.locate()
    layout = _layout(directory)
    maps = layout.maps_dir
    before = _tree(directory)
    desired = desired_from_relay(_relay(), str(maps), pf.map_type(tools, str(directory)))
    assert patcher.verify(layout, tools, desired)
    assert patcher.apply(relay_dir, layout, tools, desired, "hash").changed
    assert patcher.verify(layout, tools, desired) == []
    live = pf.postconf_n(tools, str(directory))
    assert live["relayhost"] == "[smtp.provider.test]:587"
    assert live["smtp_tls_security_level"] == "secure"
    assert live["smtp_sasl_password_maps"] == f"hash:{maps}/smartpop_sasl_passwd"
    assert (maps / "smartpop_sasl_passwd").stat().st_mode & 0o777 == 0o600
    assert (maps / "smartpop_sasl_passwd.db").stat().st_mode & 0o777 == 0o600
    after = _tree(directory)
    assert not any(name.startswith("smartpop_") for name in after)  # nothing of ours in MailPlus's dir
    assert not patcher.apply(relay_dir, layout, tools, desired, "hash").changed
    assert _tree(directory) == after
    # lines outside our block untouched
    assert (directory / "main.cf").read_bytes().startswith((DATA / fixture).read_bytes().rstrip(b"\n"))
    # drift: MailPlus regenerates main.cf
    shutil.copy(DATA / fixture, directory / "main.cf")
    assert patcher.verify(layout, tools, desired)
    with pytest.raises(StateError, match="changed since"):
        patcher.rollback(relay_dir, layout, tools)
    patcher.apply(relay_dir, layout, tools, desired, "hash")
    assert patcher.verify(layout, tools, desired) == []
    assert maincf.decode((directory / "main.cf").read_bytes()).count("BEGIN SMARTPOP") == 1
    patcher.rollback(relay_dir, layout, tools)
    assert _tree(directory) == before
    assert not maps.exists()  # SmartPop's own dir goes with its maps


def test_failure_mid_apply_rolls_back(tmp_path: Path) -> None:
    directory = _setup(tmp_path, "mailplus.cf")
    tools = pf.locate()
    before = _tree(directory)
    desired = desired_from_relay(_relay(), str(tmp_path / "maps"), "hash")

    def boom(name: str) -> None:
        if name == "master.cf":
            raise KeyboardInterrupt

    with pytest.raises(Exception, match="rolled back"):
        patcher.apply(tmp_path / "relay", _layout(directory), tools, desired, "hash", hook=boom)
    assert _tree(directory) == before
    assert not (tmp_path / "maps").exists()  # no map left behind; the empty dir goes too


@pytest.mark.parametrize("field,value", [
    ("host", "evil.test]:25\nalways_bcc = spy@evil.test"),
    ("host", "a.test\r\nmynetworks = 0.0.0.0/0"),
    ("username", "u\nmynetworks = 0.0.0.0/0"),
    ("username", "user:extra"),
    ("password", _Secret("pw\ncontent_filter = x")),
    ("port", "25 -o x"),
    ("security", "none"),
    ("host", "$(touch /tmp/pwned)"),
    ("host", "../../etc/passwd"),
])
def test_hostile_values_are_refused(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ConfigError):
        desired_from_relay(_relay(**{field: value}), str(tmp_path), "hash")


def test_only_whitelisted_parameters(tmp_path: Path) -> None:
    desired = desired_from_relay(_relay(), str(tmp_path), "hash")
    assert set(desired.params) <= WHITELIST
    assert json.dumps(desired.params).count("\\n") == 0
