"""Where SmartPop keeps its files; the only module that reads location env vars."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple, Optional

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
    def status_file(self) -> Path:
        """Runtime status (last runs, counters) shared by daemon, CLI and UI."""
        return self.data / "status.json"

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
    environ = os.environ if env is None else env
    for candidate in (cli_value, environ.get("SMARTPOP_DATA"), environ.get("SYNOPKG_PKGVAR")):
        if candidate:
            return Path(candidate)
    raise UsageError(
        "no data directory: pass --data DIR, or set SMARTPOP_DATA (on the NAS, "
        "SYNOPKG_PKGVAR is set by DSM)"
    )


def ensure_data_dir(paths: Paths) -> None:
    """Create the data dir and its private subdirectories (mode 0700)."""
    for directory in (paths.data, paths.locks, paths.spool):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)


RELAY_BUNDLE = "smartpop-relay.py"


def relay_bundle_file(env: Optional[Mapping[str, str]] = None) -> Path:
    """The relay bundle the root task runs: bin/ next to this package, or $SMARTPOP_RELAY_BUNDLE."""
    environ = os.environ if env is None else env
    override = environ.get("SMARTPOP_RELAY_BUNDLE")
    if override:
        # Display only: root runs the file named in its own command, after checking its hash.
        return Path(override)
    return Path(__file__).resolve().parent.parent / "bin" / RELAY_BUNDLE
