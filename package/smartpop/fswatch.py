"""Linux inotify through ctypes: be woken when a file changes instead of looking every second.

The daemon watches the data dir for a new config.json (written by the UI, the wizard or the
CLI in another process), so its scheduler can sleep until something is due. Without inotify
(another kernel, no libc symbol) `Watch.open` returns None and the caller looks from time
to time instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
# Every kind of change that can reach the disk (reads and opens are left out).
WRITES = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1  # noqa: B018 - raises AttributeError where the symbol is missing
        return libc
    except (OSError, AttributeError):
        return None


class Watch:
    """One inotify instance: non-blocking, readable (for select) when events are queued."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self._dirs: Dict[int, Path] = {}  # watch descriptor -> directory

    @classmethod
    def open(cls) -> Optional[Watch]:
        """A new watch, or None where inotify is not available."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.info("inotify unavailable (%s); changes are noticed later", os.strerror(ctypes.get_errno()))
            return None
        return cls(fd, libc)

    def add(self, directory: Path, mask: int = WRITES) -> bool:
        """Watch the entries of `directory` for `mask`; False if the kernel refused."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(directory)), mask | IN_ONLYDIR)
        if wd < 0:
            log.info("cannot watch %s (%s)", directory, os.strerror(ctypes.get_errno()))
            return False
        self._dirs[wd] = Path(directory)
        return True

    def fileno(self) -> int:
        """The inotify descriptor, for select()."""
        return self.fd

    def read(self) -> List[Tuple[Path, int]]:
        """The queued events as (path, mask); empty when none are queued."""
        events: List[Tuple[Path, int]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            if not data:
                return events
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size:offset + _EVENT.size + size].rstrip(b"\0")
                offset += _EVENT.size + size
                directory = self._dirs.get(wd)
                if directory is not None:
                    events.append((directory / os.fsdecode(raw) if raw else directory, mask))

    def close(self) -> None:
        """Release the descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
