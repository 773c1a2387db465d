"""Free loopback TCP ports for test servers."""

from __future__ import annotations

import socket
from typing import List


def free_ports(count: int = 1) -> List[int]:
    """Return `count` distinct ports that were free on 127.0.0.1 and ::1 a moment ago."""
    sockets = []
    ports: List[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            sockets.append(s)
            try:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s6.bind(("::1", port))
                sockets.append(s6)
            except OSError:
                continue
            ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports
