"""File helpers: atomic writes and inter-process locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Union

from smartpop.errors import LockBusy

PathLike = Union[str, Path]

# How often a lock with a timeout is tried again while another process holds it.
LOCK_POLL = 0.05


def atomic_write(path: PathLike, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file in the same dir, fsync, rename, fsync the dir."""
    target = Path(path)
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix="." + target.name + ".", suffix=".tmp", dir=str(directory))
    try:
        # mkstemp creates 0600; chmod before any byte lands so a secret is never exposed.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, str(target))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(directory)


def fsync_dir(directory: PathLike) -> None:
    """Make a rename or unlink in `directory` durable."""
    dir_fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(lock_path: PathLike, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive inter-process lock; timeout<0 waits forever, 0 fails at once."""
    # flock(2) on a file opened read-only, never truncated or chmod-ed once it exists: taking
    # the lock then changes no inode, so a poll that finds nothing writes nothing to disk
    # (filelock truncates and chmods its file on every acquire, which dirties the inode and
    # keeps a hibernating volume awake). The lock is released by close, also when the
    # process dies, so no stale lock is ever left behind.
    name = str(lock_path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        Path(name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        _acquire(fd, name, timeout)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _acquire(fd: int, name: str, timeout: float) -> None:
    if timeout < 0:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockBusy(f"{name} is held by another process") from None
            time.sleep(LOCK_POLL)
