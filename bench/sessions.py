"""Count concurrent TCP sessions on a server port while a tool runs (from /proc/net/tcp{,6}).

This shows how many provider connections SmartPop opens at once when it polls many
accounts: the issue asks for bounded concurrency, and the collector says nothing about it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

ESTABLISHED = "01"


def established(port: int) -> int:
    """Client-side established connections to local `port` right now (the tool's own sockets).

    The client side, not the server's: a client socket leaves ESTABLISHED the moment the
    tool closes it, while the server's end may linger for a moment after QUIT and make a
    tool that just moved on to its next account look one session busier than it is.
    """
    want = f"{port:04X}"
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == ESTABLISHED and parts[2].rsplit(":", 1)[1] == want:
                count += 1
    return count


class PeakSessions:
    """Sample established() every `period` s in a thread; .peak is the maximum seen."""

    def __init__(self, port: int, period: float = 0.02) -> None:
        self.port = port
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, established(self.port))
            time.sleep(self.period)

    def __enter__(self) -> PeakSessions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
