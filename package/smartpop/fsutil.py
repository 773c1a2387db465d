"""File helpers: atomic writes and inter-process locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

import filelock

from smartpop.errors import LockBusy
from smartpop.paths import Paths

PathLike = Union[str, Path]

# How often a lock is tried again while another process holds it.
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


class QuietFileLock(filelock.BaseFileLock):
    """filelock's lock on flock(2) that never changes the lock file once it exists.

    filelock's own UnixFileLock opens its file with O_TRUNC and chmods it on every acquire:
    both change the inode, i.e. a disk write per poll, which keeps a hibernating volume
    awake. This one opens the file read-only (flock needs no write access), creates it 0600
    only when missing, and refuses a symlink in its place. The lock goes with the descriptor,
    also when the process dies, so no stale lock is ever left behind.
    """

    def _acquire(self) -> None:
        name = self.lock_file
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            Path(name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held elsewhere: filelock tries again until its timeout
            return
        self._context.lock_file_fd = fd

    def _release(self) -> None:
        fd = self._context.lock_file_fd
        self._context.lock_file_fd = None
        if fd is not None:
            os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def locked(path: PathLike, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive inter-process lock; timeout<0 waits forever, 0 fails at once."""
    lock = QuietFileLock(str(path), timeout=timeout)
    try:
        lock.acquire(poll_interval=LOCK_POLL)
    except filelock.Timeout as exc:
        raise LockBusy(f"{path} is held by another process") from exc
    try:
        yield
    finally:
        lock.release()


def lock_path(paths: Paths, account: str) -> Path:
    """The per-account lock file (one runner per mailbox, daemon or `fetch`)."""
    return paths.locks / f"account.{account}.lock"


def lock_held(path: PathLike) -> bool:
    """True if some process holds the lock file now (a killed run leaves running=1 behind)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock we may just have taken
    return False
