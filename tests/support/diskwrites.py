"""What a process writes: changes under a directory tree (inotify) and /proc/PID/io write_bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

from smartpop import fswatch


class TreeWatch:
    """Every write-kind event under `root`, sub-directories (also new ones) included."""

    def __init__(self, root: Path) -> None:
        watch = fswatch.Watch.open()
        assert watch is not None, "inotify is needed to see what is written"
        self.watch = watch
        self.root = root
        self.events: List[Tuple[str, int]] = []
        for directory, _dirs, _files in os.walk(root):
            self.watch.add(Path(directory))

    def collect(self) -> List[Tuple[str, int]]:
        """Events so far, as (path relative to root, mask)."""
        for path, mask in self.watch.read():
            if mask & fswatch.IN_ISDIR and mask & fswatch.IN_CREATE:
                self.watch.add(path)
            self.events.append((str(path.relative_to(self.root)), mask))
        return list(self.events)

    def close(self) -> None:
        """Stop watching."""
        self.watch.close()


def write_bytes(pid: int) -> int:
    """Bytes the process (all its threads) caused to be written to storage so far."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError(f"no write_bytes in /proc/{pid}/io")
