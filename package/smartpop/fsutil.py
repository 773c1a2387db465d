"""File helpers: atomic writes and inter-process locks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

import filelock

from smartpop.errors import LockBusy

PathLike = Union[str, Path]


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
    lock = filelock.FileLock(str(lock_path), timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockBusy(f"{lock_path} is held by another process") from exc
    try:
        yield
    finally:
        lock.release()
