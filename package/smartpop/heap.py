"""Hand freed heap memory back to the system after a collection run (glibc's malloc_trim).

A run allocates for TLS, SQLite and message buffers in a worker thread; glibc keeps what was
freed in that thread's arena, so the idle daemon would hold the high-water mark of its
busiest run for good. Where malloc_trim is missing (another libc) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any, Optional


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Any]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim() -> None:
    """Return free heap pages of every arena to the system (cheap: a few madvise calls)."""
    function = _malloc_trim()
    if function is not None:
        function(0)
