"""What the root entry point may trust: its own state and maps directories and the CA bundle.

DATA (and DATA/relay) belong to the unprivileged package user, who could plant symlinks or a
forged checkpoint there. Root therefore keeps its checkpoints in DATA/relay/state, a directory
it owns, opened without following symlinks and then used through /proc/self/fd/N, so a
rename or swap of the name after the check cannot redirect any later write.
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path
from typing import List, Optional, Tuple

from smartpop.errors import StateError, UsageError
from smartpop.relay.desired import ca_file_value

STATE = "state"
# Well-known system CA bundles (Debian/Ubuntu/DSM, RHEL, BSD/Alpine), after OpenSSL's own default.
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
_OPEN_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def find_ca_file() -> str:
    """The CA bundle Postfix verifies providers against: $SSL_CERT_FILE / OpenSSL's default, else a system one."""
    # get_default_verify_paths() honours SSL_CERT_FILE, the standard OpenSSL way for the admin
    # (who writes the root task) to name another bundle; config.json cannot change it.
    candidates: List[str] = []
    default = ssl.get_default_verify_paths().cafile
    if default:
        candidates.append(default)
    candidates.extend(CA_BUNDLES)
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if os.path.isfile(real) and os.access(real, os.R_OK):
            return ca_file_value(real)
    raise UsageError("no CA bundle found to verify the relay's certificate (looked in "
                     + ", ".join(candidates) + "); set SSL_CERT_FILE=/path/to/ca-bundle.crt in the task")


def _open_dir(name: str, parent_fd: Optional[int], shown: Path) -> int:
    try:
        return os.open(name, _OPEN_DIR, dir_fd=parent_fd)
    except OSError as exc:
        raise StateError(f"cannot open {shown} safely ({exc.strerror}); it must be a real directory, "
                         "not a symlink") from None


def _mkdir(name: str, parent_fd: Optional[int], mode: int) -> bool:
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        return False
    return True


def open_state_dir(relay_dir: Path) -> Tuple[int, Path]:
    """Open (creating) root's state dir DATA/relay/state; returns (fd, path that stays bound to it)."""
    # DATA itself may be a symlink DSM made (/var/packages/P/var -> /volumeN/@appdata/P, in a
    # root-owned dir): resolve it; below it, nothing is followed.
    data = Path(os.path.realpath(str(relay_dir.parent)))
    data_fd = _open_dir(str(data), None, data)
    try:
        created = _mkdir(relay_dir.name, data_fd, 0o755)
        relay_fd = _open_dir(relay_dir.name, data_fd, relay_dir)
        owner = os.fstat(data_fd).st_uid
    finally:
        os.close(data_fd)
    try:
        if created and os.geteuid() == 0 and owner != 0:
            # The package user leaves rollback requests in DATA/relay: give it to DATA's owner.
            os.fchown(relay_fd, owner, -1)
        _mkdir(STATE, relay_fd, 0o755)
        state_fd = _open_dir(STATE, relay_fd, relay_dir / STATE)
    finally:
        os.close(relay_fd)
    info = os.fstat(state_fd)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(state_fd)
        raise StateError(f"{relay_dir / STATE} is not owned by this user or is writable by others; "
                         "SmartPop will not trust checkpoints in it. Remove it and run the task again")
    proc_path = Path(f"/proc/self/fd/{state_fd}")
    if not proc_path.is_dir():  # no /proc (not Linux): the checked name is the best we have
        return state_fd, relay_dir / STATE
    return state_fd, proc_path


def open_maps_dir(maps_dir: Path, postfix_dir: Path) -> int:
    """Open (creating, mode 0700) SmartPop's root-owned maps dir; returns its fd, refuses a foreign one."""
    # Postfix opens the maps by path as root, so the path must stay ours: the parent may only be
    # writable by root or the Postfix dir's owner, and the dir itself is root's, not a symlink.
    from smartpop.relay.layout import check_maps_parent

    problem = check_maps_parent(maps_dir.parent, postfix_dir)
    if problem:
        raise StateError(f"refusing the maps dir {maps_dir}: {problem}; name another one with --maps-dir DIR")
    try:
        parent_fd = _open_dir(str(maps_dir.parent), None, maps_dir.parent)
        try:
            _mkdir(maps_dir.name, parent_fd, 0o700)
            fd = _open_dir(maps_dir.name, parent_fd, maps_dir)
        finally:
            os.close(parent_fd)
    except StateError as exc:
        raise StateError(f"refusing the maps dir {maps_dir}: {exc}") from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise StateError(f"refusing the maps dir {maps_dir}: it is not owned by this user or is writable by "
                         "others, and SmartPop will not put the relay password there. Remove it and run the task again")
    return fd


def state_dir_name(relay_dir: Path) -> Path:
    """Where root's state lives (for read-only use by the unprivileged side)."""
    return relay_dir / STATE
