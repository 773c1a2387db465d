"""build.sh output: .spk members, modes, INFO, checksum, icons, JSON, reproducibility."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, Tuple

import pytest

from support.build import ROOT, build_spk

REQUIRED_MEMBERS = {"INFO", "package.tgz", "scripts", "conf", "WIZARD_UIFILES", "PACKAGE_ICON.PNG",
                    "PACKAGE_ICON_256.PNG"}
SCRIPTS = {"preinst", "postinst", "preuninst", "postuninst", "preupgrade", "postupgrade", "start-stop-status"}


def read_info(text: str) -> Dict[str, str]:
    """Parse INFO's key="value" lines."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        assert sep and value.startswith('"') and value.endswith('"'), f"bad INFO line {line!r}"
        info[key] = value[1:-1]
    return info


def png_size(data: bytes) -> Tuple[int, int]:
    """Width and height from a PNG's IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def spk_tar(built_spk: Path) -> Dict[str, tarfile.TarInfo]:
    """Members of the built .spk by name."""
    assert built_spk.name == "SmartPop-0.1.0-0001-noarch.spk" or built_spk.name.startswith("SmartPop-")
    with open(built_spk, "rb") as handle:
        assert handle.read(2) != b"\x1f\x8b", "the outer .spk must be a plain, uncompressed tar"
    with tarfile.open(built_spk, "r:") as archive:
        return {m.name: m for m in archive.getmembers()}


def member_bytes(spk: Path, name: str) -> bytes:
    """Content of one .spk member."""
    with tarfile.open(spk, "r:") as archive:
        handle = archive.extractfile(name)
        assert handle is not None
        return handle.read()


def test_members_and_modes(spk_tar: Dict[str, tarfile.TarInfo]) -> None:
    """All DSM members are present at the top level; scripts 0755, the rest 0644."""
    top = {name.split("/")[0] for name in spk_tar}
    assert top == REQUIRED_MEMBERS
    assert {n.split("/")[1] for n in spk_tar if n.startswith("scripts/")} >= SCRIPTS
    for name, member in spk_tar.items():
        if member.isdir():
            continue
        expected = 0o755 if name.startswith("scripts/") else 0o644
        assert member.mode & 0o777 == expected, f"{name} has mode {oct(member.mode)}"
        assert not name.startswith("./")
    wizard = {n.split("/")[1] for n in spk_tar if n.startswith("WIZARD_UIFILES/")}
    assert wizard >= {"install_uifile", "install_uifile_ger", "uninstall_uifile", "upgrade_uifile"}


def test_info(built_spk: Path) -> None:
    """INFO has the required keys, a DSM-valid version and the MD5 of package.tgz."""
    info = read_info(member_bytes(built_spk, "INFO").decode("utf-8"))
    assert info["package"] == "SmartPop"
    assert info["os_min_ver"] == "7.0-40000" and info["arch"] == "noarch"
    for key in ("displayname", "displayname_ger", "description", "description_ger", "maintainer", "dsmuidir",
                "dsmappname"):
        assert info[key], key
    assert "firmware" not in info
    version = (ROOT / "package/smartpop/__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert info["version"] == version
    segments = info["version"].replace("-", ".").split(".")
    assert all(s.isdigit() and int(s) < 2**31 for s in segments) and "-" in info["version"]
    assert info["checksum"] == hashlib.md5(member_bytes(built_spk, "package.tgz")).hexdigest()
    ui_config = json.loads((ROOT / "ui/config").read_text())
    assert info["dsmappname"] in ui_config[".url"]
    assert info["dsmuidir"] == "ui"


def test_icons(built_spk: Path) -> None:
    """Package Center icons: 64x64 and 256x256 PNG."""
    assert png_size(member_bytes(built_spk, "PACKAGE_ICON.PNG")) == (64, 64)
    assert png_size(member_bytes(built_spk, "PACKAGE_ICON_256.PNG")) == (256, 256)


def test_every_packed_json_parses(built_spk: Path) -> None:
    """conf/*, wizard files and ui/config in the package are valid JSON."""
    with tarfile.open(built_spk, "r:") as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
        for name in names:
            if name.startswith(("conf/", "WIZARD_UIFILES/")):
                json.loads(member_bytes(built_spk, name))
    payload = tarfile.open(fileobj=io.BytesIO(member_bytes(built_spk, "package.tgz")), mode="r:gz")
    config = payload.extractfile("./ui/config")
    assert config is not None
    json.loads(config.read())


def test_payload_layout(built_spk: Path) -> None:
    """package.tgz holds the launcher (0755), the code, the UI and the bundled libraries."""
    payload = tarfile.open(fileobj=io.BytesIO(member_bytes(built_spk, "package.tgz")), mode="r:gz")
    members = {m.name: m for m in payload.getmembers()}
    assert members["./bin/smartpop"].mode & 0o777 == 0o755
    for name in ("./smartpop/__main__.py", "./smartpop/cli.py", "./ui/config", "./ui/SmartPop.sc",
                 "./lib/flask/__init__.py", "./lib/waitress/__init__.py", "./lib/requests/__init__.py",
                 "./lib/filelock/__init__.py", "./lib/markupsafe/_native.py",
                 "./lib/dns/resolver.py", "./lib/spf.py"):
        assert name in members, name
    assert not [n for n in members if n.endswith((".so", ".pyc")) or "__pycache__" in n]
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    # DSM serves ui/ itself: the pages' styles and scripts live there too (issue 13 §1).
    for name in ("app.css", "app.js"):
        shipped = payload.extractfile(f"./ui/static/{name}")
        assert shipped is not None and members[f"./ui/static/{name}"].mode & 0o777 == 0o644
        assert shipped.read() == (ROOT / "package/smartpop/web/static" / name).read_bytes()


def test_two_builds_give_the_same_payload(built_spk: Path, tmp_path: Path) -> None:
    """Reproducible: a second build of the same tree gives byte-identical package.tgz."""
    again = build_spk(tmp_path / "again")
    assert member_bytes(again, "package.tgz") == member_bytes(built_spk, "package.tgz")
    assert gzip.decompress(member_bytes(again, "package.tgz"))  # a real gzip stream


def test_build_fails_on_invalid_json(tmp_path: Path) -> None:
    """A broken wizard file stops the build with the file named."""
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    (source / "WIZARD_UIFILES/install_uifile").write_text('[{"step_title": "x",}]')
    proc = subprocess.run([str(source / "build.sh")], cwd=source, capture_output=True, text=True,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
                               "SMARTPOP_DIST": str(tmp_path / "dist")})
    assert proc.returncode != 0
    assert "invalid JSON in WIZARD_UIFILES/install_uifile" in proc.stderr
    assert not list((tmp_path / "dist").glob("*.spk")) if (tmp_path / "dist").exists() else True


def test_build_rejects_a_bad_version(tmp_path: Path) -> None:
    """A version DSM would refuse never reaches INFO."""
    proc = subprocess.run([str(ROOT / "build.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
                               "SMARTPOP_DIST": str(tmp_path), "SMARTPOP_BUILD_VERSION": "1.0-beta"})
    assert proc.returncode != 0 and "not DSM-valid" in proc.stderr
