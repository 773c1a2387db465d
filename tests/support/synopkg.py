"""A stand-in for DSM's synopkg: runs a built .spk's scripts the way DSM 7 does.

It extracts the .spk, unpacks package.tgz into a `target` dir, and calls the lifecycle
scripts in DSM's documented order (Synology's DSM 7 package developer guide) with the SYNOPKG_*
variables and the wizard answers in the environment, as an unprivileged user (DSM 7 runs
third-party packages as their own user). Every script call is recorded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from support.pythons import python38_home

PKG = "SmartPop"
# tarfile's extraction filter (3.12+, backported to 3.8.17+) refuses absolute paths and
# links out of the tree; older Pythons extract as before.
SAFE_EXTRACT: Dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
TEST_USER = "smartpop-pkg"
PY38_COPY = Path("/tmp/smartpop-py38")


@dataclass
class ScriptRun:
    """One script invocation and its outcome."""

    script: str
    action: str
    status: str
    rc: int
    stdout: str
    stderr: str
    dialog: str


@dataclass
class Spk:
    """An extracted .spk."""

    path: Path
    root: Path
    info: Dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """INFO's version."""
        return self.info["version"]


def ensure_user() -> Optional[pwd.struct_passwd]:
    """The unprivileged package user (created when running as root); None if we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
        return pwd.getpwnam(TEST_USER)


def python_for_package_user() -> Optional[Path]:
    """A Python 3.8 the package user can execute (pyenv's lives under /root, mode 0700)."""
    home = python38_home()
    if home is None:
        return None
    binary = home / "bin" / "python3.8"
    if os.geteuid() != 0:
        return binary if os.access(binary, os.X_OK) else None
    if not (PY38_COPY / "bin" / "python3.8").exists():
        tmp = PY38_COPY.with_name(PY38_COPY.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(home, tmp, symlinks=True,
                        ignore=shutil.ignore_patterns("test", "tests", "site-packages", "__pycache__", "idlelib",
                                                      "tkinter", "ensurepip", "lib2to3"))
        (tmp / "lib" / "python3.8" / "site-packages").mkdir(exist_ok=True)
        os.rename(tmp, PY38_COPY)
    return PY38_COPY / "bin" / "python3.8"


def extract_spk(spk_path: Path, dest: Path) -> Spk:
    """Extract the outer tar as DSM does and parse INFO."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(spk_path, "r:") as archive:  # a plain tar, never compressed
        archive.extractall(dest, **SAFE_EXTRACT)
    info = {}
    for line in (dest / "INFO").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        info[key] = value.strip().strip('"')
    return Spk(spk_path, dest, info)


class FakeDSM:
    """One NAS with one package slot: /var/packages/SmartPop/{target,var,tmp,scripts}."""

    def __init__(self, root: Path, python: Optional[Path], language: str = "enu") -> None:
        self.root = root
        self.user = ensure_user()
        self.language = language
        self.pkg_dir = root / "var/packages" / PKG
        self.target = self.pkg_dir / "target"
        self.var = self.pkg_dir / "var"
        self.tmp = self.pkg_dir / "tmp"
        self.scripts = self.pkg_dir / "scripts"
        self.argv_log = root / "python-argv.log"
        self.runs: List[ScriptRun] = []
        self.installed: Optional[Spk] = None
        for directory in (self.pkg_dir, self.var, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self._chown(self.var)
        self._chown(self.tmp)
        self.argv_log.touch()
        self._chown(self.argv_log)
        self.python_shim: Optional[Path] = None
        if python is not None:
            self.python_shim = root / "python-shim"
            # Records every interpreter command line, so tests can prove that no secret is
            # ever passed as an argument.
            self.python_shim.write_text(
                "#!/bin/sh\n"
                f"printf '%s\\n' \"$*\" >> '{self.argv_log}'\n"
                f"LD_LIBRARY_PATH='{python.parent.parent / 'lib'}' exec '{python}' \"$@\"\n")
            self.python_shim.chmod(0o755)

    # -- helpers -------------------------------------------------------------------------
    def _chown(self, path: Path) -> None:
        if self.user is None:
            return
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        if path.is_dir() and not path.is_symlink():
            for dirpath, dirnames, filenames in os.walk(path):
                for name in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, name), self.user.pw_uid, self.user.pw_gid)

    def env(self, spk: Spk, status: str, wizard: Mapping[str, str], old: Optional[Spk] = None) -> Dict[str, str]:
        """The environment DSM gives a package script."""
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/nonexistent",
            "SYNOPKG_PKGNAME": PKG,
            "SYNOPKG_PKGVER": spk.version,
            "SYNOPKG_PKGDEST": str(self.target),
            "SYNOPKG_PKGDEST_VOL": "/volume1",
            "SYNOPKG_PKGVAR": str(self.var),
            "SYNOPKG_PKGTMP": str(self.tmp),
            "SYNOPKG_PKGHOME": str(self.pkg_dir / "home"),
            "SYNOPKG_PKGINST_TEMP_DIR": str(spk.root),
            "SYNOPKG_PKG_STATUS": status,
            "SYNOPKG_DSM_LANGUAGE": self.language,
            "SYNOPKG_DSM_VERSION_MAJOR": "7",
            "SYNOPKG_DSM_VERSION_MINOR": "2",
            "SYNOPKG_DSM_VERSION_BUILD": "72806",
            "SYNOPKG_DSM_ARCH": "geminilake",
            "SYNOPKG_USERNAME": "admin",
        }
        if old is not None:
            env["SYNOPKG_OLD_PKGVER"] = old.version
        if self.python_shim is not None:
            env["SMARTPOP_PYTHON"] = str(self.python_shim)
        env.update(wizard)
        return env

    def run(self, scripts_dir: Path, script: str, spk: Spk, status: str, action: str = "",
            wizard: Optional[Mapping[str, str]] = None, old: Optional[Spk] = None,
            extra_env: Optional[Mapping[str, str]] = None) -> ScriptRun:
        """Run one script as the package user; return what happened."""
        dialog = self.tmp / "dialog.txt"
        dialog.write_text("")
        self._chown(dialog)
        env = self.env(spk, status, wizard or {}, old)
        env["SYNOPKG_TEMP_LOGFILE"] = str(dialog)
        env.update(extra_env or {})
        argv = [str(scripts_dir / script)] + ([action] if action else [])
        if self.user is not None:
            argv = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups",
                    "--", *argv]
        proc = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120)
        run = ScriptRun(script, action, status, proc.returncode, proc.stdout, proc.stderr,
                        dialog.read_text(encoding="utf-8"))
        self.runs.append(run)
        return run

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the installed target/bin/smartpop as the package user (the way the UI's backend does)."""
        assert self.installed is not None
        env = self.env(self.installed, "", {})
        argv = [str(self.target / "bin" / "smartpop"), "--data", str(self.var), *args]
        if self.user is not None:
            argv = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups",
                    "--", *argv]
        return subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=60)

    def _unpack_target(self, spk: Spk) -> None:
        self.target.mkdir(parents=True)
        with tarfile.open(spk.root / "package.tgz", "r:gz") as archive:
            archive.extractall(self.target, **SAFE_EXTRACT)
        self._chown(self.target)  # DSM chowns target to the package user

    def _copy_scripts(self, spk: Spk) -> None:
        shutil.rmtree(self.scripts, ignore_errors=True)
        shutil.copytree(spk.root / "scripts", self.scripts)

    # -- DSM operations ---------------------------------------------------------------------
    def install(self, spk: Spk, wizard: Mapping[str, str], start: bool = True) -> List[ScriptRun]:
        """preinst → unpack → postinst → (prestart → start)."""
        runs = []
        staging = spk.root / "scripts"
        runs.append(self.run(staging, "preinst", spk, "INSTALL", wizard=wizard))
        if runs[-1].rc != 0:
            return runs
        self._unpack_target(spk)
        runs.append(self.run(staging, "postinst", spk, "INSTALL", wizard=wizard))
        if runs[-1].rc != 0:
            return runs
        self._copy_scripts(spk)
        self.installed = spk
        if start:
            runs += self.start("INSTALL")
        return runs

    def start(self, status: str = "START") -> List[ScriptRun]:
        """prestart → start."""
        assert self.installed is not None
        runs = [self.run(self.scripts, "start-stop-status", self.installed, status, "prestart")]
        if runs[-1].rc == 0:
            runs.append(self.run(self.scripts, "start-stop-status", self.installed, status, "start"))
        return runs

    def stop(self, status: str = "STOP") -> List[ScriptRun]:
        """prestop → stop."""
        assert self.installed is not None
        return [self.run(self.scripts, "start-stop-status", self.installed, status, "prestop"),
                self.run(self.scripts, "start-stop-status", self.installed, status, "stop")]

    def status(self) -> int:
        """start-stop-status status: 0 running, 3 not running."""
        assert self.installed is not None
        return self.run(self.scripts, "start-stop-status", self.installed, "", "status").rc

    def upgrade(self, new: Spk, wizard: Optional[Mapping[str, str]] = None) -> List[ScriptRun]:
        """DSM's upgrade order, old scripts where DSM uses the old package's."""
        old = self.installed
        assert old is not None
        wizard = wizard or {}
        was_running = self.status() == 0
        runs = []
        if was_running:
            runs += self.stop("UPGRADE")
        staging = new.root / "scripts"
        runs.append(self.run(staging, "preupgrade", new, "UPGRADE", wizard=wizard, old=old))
        runs.append(self.run(self.scripts, "preuninst", old, "UPGRADE", wizard=wizard, old=old))
        shutil.rmtree(self.target)
        runs.append(self.run(self.scripts, "postuninst", old, "UPGRADE", wizard=wizard, old=old))
        runs.append(self.run(staging, "preinst", new, "UPGRADE", wizard=wizard, old=old))
        self._unpack_target(new)
        runs.append(self.run(staging, "postinst", new, "UPGRADE", wizard=wizard, old=old))
        runs.append(self.run(staging, "postupgrade", new, "UPGRADE", wizard=wizard, old=old))
        self._copy_scripts(new)
        self.installed = new
        if was_running:
            runs += self.start("UPGRADE")
        return runs

    def uninstall(self, wizard: Mapping[str, str]) -> List[ScriptRun]:
        """prestop → stop → preuninst → (target removed) → postuninst.

        A failing preuninst aborts the uninstall; DSM then starts the package again.
        """
        spk = self.installed
        assert spk is not None
        runs = []
        was_running = self.status() == 0
        if was_running:
            runs += self.stop("UNINSTALL")
        runs.append(self.run(self.scripts, "preuninst", spk, "UNINSTALL", wizard=wizard))
        if runs[-1].rc != 0:
            if was_running:
                runs += self.start()
            return runs
        shutil.rmtree(self.target)
        runs.append(self.run(self.scripts, "postuninst", spk, "UNINSTALL", wizard=wizard))
        shutil.rmtree(self.scripts)
        self.installed = None
        return runs


def mode_of(path: Path) -> int:
    """Permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


FETCH_PASSWORD = "Fetch-P4ss word!'\"$x"
RELAY_PASSWORD = "R3lay-$ecret`uname`"


def wizard(web_port: int, **overrides: str) -> Dict[str, str]:
    """Install wizard answers, as DSM exports them."""
    answers = {
        "wizard_fetch_protocol": "pop3",
        "wizard_fetch_host": "pop.ionos.de",
        "wizard_fetch_port": "995",
        "wizard_fetch_security": "ssl",
        "wizard_fetch_user": "sammel@firma.de",
        "wizard_fetch_password": FETCH_PASSWORD,
        "wizard_local_domains": "firma.de, Firma-Zwei.de",
        "wizard_fallback_recipient": "postmaster@firma.de",
        "wizard_relay_enable": "true",
        "wizard_relay_host": "smtp.ionos.de",
        "wizard_relay_port": "587",
        "wizard_relay_security": "starttls",
        "wizard_relay_user": "sammel@firma.de",
        "wizard_relay_password": RELAY_PASSWORD,
        "wizard_web_port": str(web_port),
    }
    answers.update(overrides)
    return answers


def assert_all_ok(runs: List[ScriptRun]) -> None:
    """Every script exited 0."""
    failed = [r for r in runs if r.rc != 0]
    assert not failed, "\n".join(f"{r.script} {r.action}: rc={r.rc}\n{r.stderr}\n{r.dialog}" for r in failed)
