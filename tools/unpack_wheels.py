#!/usr/bin/env python3
"""Unpack the wheels pinned in a lock file into a flat library dir (build time only).

Compiled extension modules are dropped: the package is noarch, and the only library that
ships one (MarkupSafe's optional speedups) falls back to its pure-Python code.
"""

from __future__ import annotations

import hashlib
import re
import sys
import zipfile
from pathlib import Path
from typing import Dict

COMPILED = (".so", ".pyd", ".dylib")
LINE = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})\s*$")


def pinned_hashes(lock: Path) -> Dict[str, str]:
    """Map sha256 -> 'name==version' for every pin in the lock file."""
    pins = {}
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if not match:
            raise SystemExit(f"unpack_wheels: cannot parse lock line: {line!r}")
        pins[match.group(3)] = f"{match.group(1)}=={match.group(2)}"
    return pins


def main() -> int:
    """Verify and unpack every pinned wheel found in the cache dir."""
    lock, cache, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    pins = pinned_hashes(lock)
    found = set()
    for wheel in sorted(cache.glob("*.whl")):
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest not in pins:
            continue  # an older pin still in the cache
        found.add(digest)
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                name = member.filename
                if name.endswith("/") or name.endswith(COMPILED):
                    continue
                if name.startswith("/") or ".." in Path(name).parts:
                    raise SystemExit(f"unpack_wheels: unsafe path {name!r} in {wheel.name}")
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    missing = sorted(pins[d] for d in pins if d not in found)
    if missing:
        raise SystemExit(f"unpack_wheels: wheels missing from {cache}: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
