"""Where SmartPop keeps its files; the only module that reads location env vars."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import List, Mapping, NamedTuple, Optional, Tuple

from smartpop.errors import UsageError


class Paths(NamedTuple):
    """Locations under the data dir ($SYNOPKG_PKGVAR on the NAS)."""

    data: Path

    @property
    def config(self) -> Path:
        """The config.json every component reads and writes."""
        return self.data / "config.json"

    @property
    def state_db(self) -> Path:
        """The SQLite store of collection state."""
        return self.data / "state.sqlite3"

    @property
    def locks(self) -> Path:
        """Directory of the per-resource lock files."""
        return self.data / "locks"

    @property
    def spool(self) -> Path:
        """Directory for messages streamed in from the provider."""
        return self.data / "spool"

    @property
    def log_file(self) -> Path:
        """The package's own log file."""
        return self.data / "smartpop.log"

    @property
    def pid_file(self) -> Path:
        """Pid file of the running `serve` daemon."""
        return self.data / "smartpop.pid"

    @property
    def health_file(self) -> Path:
        """The last mail health report (smartpop.health), shared by the CLI and the web page."""
        return self.data / "health.json"

    @property
    def web_secret(self) -> Path:
        """Shared secret between the DSM CGI and the backend (mode 0600)."""
        return self.data / "web.secret"

    @property
    def relay_dir(self) -> Path:
        """Relay checkpoints, requests and generated maps."""
        return self.data / "relay"


def resolve_data_dir(cli_value: Optional[str], env: Optional[Mapping[str, str]] = None) -> Path:
    """Pick the data dir: --data, else $SMARTPOP_DATA, else $SYNOPKG_PKGVAR."""
    return resolve_data_dir_source(cli_value, env)[0]


def resolve_data_dir_source(cli_value: Optional[str],
                            env: Optional[Mapping[str, str]] = None) -> Tuple[Path, str]:
    """The data dir and where it came from ('--data', '$SMARTPOP_DATA' or '$SYNOPKG_PKGVAR')."""
    environ = os.environ if env is None else env
    for candidate, source in ((cli_value, "--data"), (environ.get("SMARTPOP_DATA"), "$SMARTPOP_DATA"),
                              (environ.get("SYNOPKG_PKGVAR"), "$SYNOPKG_PKGVAR")):
        if candidate:
            return Path(candidate), source
    raise UsageError(
        "no data directory: pass --data DIR, or set SMARTPOP_DATA (on the NAS, "
        "SYNOPKG_PKGVAR is set by DSM)"
    )


def ensure_data_dir(paths: Paths) -> None:
    """Create the data dir and its private subdirectories (mode 0700)."""
    for directory in (paths.data, paths.locks, paths.spool):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)


# What the package user's commands write in DATA. A file here that another user owns (typically
# root, after someone ran an old Task Scheduler line or `fetch` as root) locks the package out.
OWN_FILES = ("config.json", "config.json.lock", "config.json.pre-migration", "state.sqlite3",
             "state.sqlite3-wal", "state.sqlite3-shm", "state.sqlite3-journal", "status.json",
             "smartpop.log", "web.secret", "smartpop.pid", "health.json", "health-state.json")
OWN_DIRS = ("locks", "spool", "run")


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def open_data_dir(paths: Paths, source: str, create: bool = False) -> None:
    """Check that DATA is a directory this user owns and can use, then create its subdirectories.

    Nothing is created unless DATA exists (or `create` and its parent exists): a mistyped --data
    must not leave directories behind. Raises UsageError naming the path and the fix.
    """
    data = paths.data
    try:
        info = os.stat(data)
    except FileNotFoundError:
        if not (create and data.parent.is_dir()):
            raise UsageError(f"data directory {data} (from {source}) does not exist. Fix: correct {source}, "
                             f"or create it first: mkdir -m 700 {data}") from None
        data.mkdir(mode=0o700)
        info = os.stat(data)
    except OSError as exc:
        raise UsageError(f"cannot use data directory {data} (from {source}): {exc.strerror}. "
                         "Fix: check the path and its parent directories' modes") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{data} (from {source}) is a file, not a directory. Fix: point {source} at the "
                         "data directory (on the NAS: /var/packages/SmartPop/var)")
    problem = foreign_entry(paths, os.geteuid())
    if problem is not None:
        raise UsageError(problem)
    for directory in (paths.locks, paths.spool):
        directory.mkdir(mode=0o700, exist_ok=True)


def foreign_entry(paths: Paths, uid: int) -> Optional[str]:
    """The first file of DATA that `uid` does not own or cannot use, as a one-line message with the fix."""
    me = _user(uid)
    entries: List[Path] = [paths.data] + [paths.data / name for name in OWN_FILES + OWN_DIRS]
    try:
        entries += sorted(paths.locks.iterdir())
    except OSError:
        pass
    for path in entries:
        try:
            # DATA itself may be DSM's root-owned symlink to the volume: judge what it points to.
            info = os.stat(path) if path == paths.data else os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot check {path}: {exc.strerror}. Fix: check the modes of {paths.data} and its parents"
        if info.st_uid != uid and path == paths.data:
            return (f"{path} belongs to {_user(info.st_uid)}, but smartpop runs as {me}. Fix: run smartpop as "
                    f"{_user(info.st_uid)}, or point --data at your own data directory")
        if info.st_uid != uid:
            return (f"{path} belongs to {_user(info.st_uid)}, not to {me} who owns {paths.data}. Fix: give it "
                    f"back: chown -R {_name(uid)} {paths.data}")
        wanted = os.R_OK | os.W_OK | (os.X_OK if stat.S_ISDIR(info.st_mode) else 0)
        if not stat.S_ISLNK(info.st_mode) and not os.access(path, wanted):
            bits = "rwx" if wanted & os.X_OK else "rw"
            return f"{path} is not readable and writable for {me}. Fix: chmod u+{bits} {path}"
    return None


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


RELAY_BUNDLE = "smartpop-relay.py"


def relay_bundle_file(env: Optional[Mapping[str, str]] = None) -> Path:
    """The relay bundle the root task runs: bin/ next to this package, or $SMARTPOP_RELAY_BUNDLE."""
    environ = os.environ if env is None else env
    override = environ.get("SMARTPOP_RELAY_BUNDLE")
    if override:
        # Display only: root runs the file named in its own command, after checking its hash.
        return Path(override)
    return Path(__file__).resolve().parent.parent / "bin" / RELAY_BUNDLE
