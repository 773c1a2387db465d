"""Reading the package log for the Logs page: newest first, filtered by account and level."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Iterable, List, Optional

from smartpop.log import escape_controls, redact

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# The format of smartpop.log: "%(asctime)s %(levelname)s %(name)s: %(message)s".
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) ([A-Z]+) ([\w.]+): (.*)$")
# Never read more than this from the end of a (rotated, at most 2 MiB) log file.
_TAIL_BYTES = 2 * 1024 * 1024


@dataclass
class LogEvent:
    """One log record as shown on the page."""

    time: str
    level: str
    source: str
    message: str


def _events(lines: Iterable[str]) -> List[LogEvent]:
    events: List[LogEvent] = []
    for line in lines:
        match = _LINE.match(line)
        if match:
            events.append(LogEvent(match.group(1).split(",")[0], match.group(2), match.group(3),
                                   escape_controls(match.group(4))))
        elif events and line.strip():
            # A traceback continues the previous record. Escaped too: a log written before
            # SmartPop escaped its records may hold a CR or U+2028 that a browser shows as a break.
            events[-1].message += "\n" + escape_controls(line)
    return events


def read_events(log_file: Path, account: Optional[str] = None, level: Optional[str] = None,
                limit: int = 300) -> List[LogEvent]:
    """The newest `limit` events (newest first) at `level` or above, mentioning `account` if given."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    minimum = LEVELS.index(level) if level in LEVELS else 0
    # The collector starts each account's line with "<account>: ".
    pattern = re.compile(r"(^|\W)" + re.escape(account) + r":") if account else None
    kept: Deque[LogEvent] = deque(maxlen=limit)
    # Only "\n" ends a record: str.splitlines() would also split on \r, \x0b, \x1c-\x1e, \x85 and
    # U+2028/2029, which header-derived text in a message can carry (a forged record of its own).
    for event in _events(text.split("\n")):
        if event.level in LEVELS and LEVELS.index(event.level) < minimum:
            continue
        if pattern is not None and not pattern.search(event.message):
            continue
        event.message = redact(event.message)
        kept.append(event)
    return list(reversed(kept))
