"""How the daemon notices that config.json changed: inotify where the kernel offers it, else a look now and then.

With inotify the scheduler's select() wakes on a write to the data directory (registered
with the selector as "config"); without it the file's mtime is compared every CONFIG_CHECK
seconds, so no thread wakes on a short timer while nothing is due.
"""

from __future__ import annotations

import logging
import selectors
import time
from typing import Optional

from smartpop import fswatch
from smartpop.config import store
from smartpop.config.schema import Config
from smartpop.errors import ConfigError
from smartpop.paths import Paths

log = logging.getLogger(__name__)

# Without inotify, config.json is looked at this often while nothing else wakes the scheduler.
CONFIG_CHECK = 60.0


class ConfigWatch:
    """Watches config.json for the scheduler; `load()` gives the new Config once it changed."""

    def __init__(self, paths: Paths, selector: selectors.BaseSelector) -> None:
        self.paths = paths
        self._watch = fswatch.Watch.open()
        if self._watch is not None and self._watch.add(paths.data, fswatch.IN_CLOSE_WRITE | fswatch.IN_MOVED_TO):
            selector.register(self._watch.fd, selectors.EVENT_READ, "config")
        elif self._watch is not None:
            self._watch.close()
            self._watch = None
        self._mtime = self._stat()
        self._looked = time.monotonic()

    def _stat(self) -> Optional[float]:
        try:
            return self.paths.config.stat().st_mtime
        except OSError:
            return None

    def next_look(self) -> float:
        """When (time.monotonic) to look at the file next; inf with inotify, which wakes by itself."""
        return float("inf") if self._watch is not None else self._looked + CONFIG_CHECK

    def touched(self) -> bool:
        """After the selector said "config": whether the event was about config.json."""
        assert self._watch is not None
        return any(path.name == self.paths.config.name for path, _ in self._watch.read())

    def load(self) -> Optional[Config]:
        """The new configuration if config.json changed since the last look (None: unchanged or invalid)."""
        self._looked = time.monotonic()
        mtime = self._stat()
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            config = store.load(self.paths)
        except ConfigError as exc:
            log.error("configuration changed but is invalid, keeping the previous one: %s", exc)
            return None
        log.info("configuration changed; the collector uses the new settings")
        return config

    def close(self) -> None:
        """Stop watching."""
        if self._watch is not None:
            self._watch.close()
