#!/usr/bin/env python3
"""Unpack the wheels pinned in a lock file into a flat library dir (build time only).

Compiled extension modules are dropped: the package is noarch, and the only library that
ships one (MarkupSafe's optional speedups) falls back to its pure-Python code.

A few pure-Python libraries are published as sdists only (SDIST_MODULES). Their named
modules are copied out of the hash-checked archive as they are; their setup.py is never run
to install them, so nothing but those files reaches lib/.

    unpack_wheels.py LOCK CACHE DEST    unpack every pin found in CACHE into DEST
    unpack_wheels.py --sdist-names      the sdist-only pins, comma-separated (for pip --no-binary)
"""

from __future__ import annotations

import hashlib
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Tuple

COMPILED = (".so", ".pyd", ".dylib")
# sdist-only pins -> the files to take from the archive's top directory. pyspf (module spf)
# has no wheel on PyPI; its setup.py installs exactly spf.py (py_modules=['spf']), the rest are
# scripts and tests.
SDIST_MODULES: Dict[str, Tuple[str, ...]] = {"pyspf": ("spf.py",)}
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


def unpack_sdist(archive_path: Path, pin: str, dest: Path) -> None:
    """Copy the SDIST_MODULES files of a pinned sdist into `dest`."""
    name, _, version = pin.partition("==")
    wanted = SDIST_MODULES.get(name.lower())
    if wanted is None:
        raise SystemExit(f"unpack_wheels: {archive_path.name} is an sdist, and {name} is not in SDIST_MODULES "
                         "(only listed pure-Python sdists may be bundled)")
    top = f"{name}-{version}"
    with tarfile.open(archive_path, "r:gz") as archive:
        for module in wanted:
            member = archive.getmember(f"{top}/{module}")
            if not member.isfile():
                raise SystemExit(f"unpack_wheels: {top}/{module} in {archive_path.name} is not a regular file")
            handle = archive.extractfile(member)
            assert handle is not None
            (dest / module).write_bytes(handle.read())


def main() -> int:
    """Verify and unpack every pinned wheel (and listed sdist) found in the cache dir."""
    if sys.argv[1:] == ["--sdist-names"]:
        print(",".join(sorted(SDIST_MODULES)))
        return 0
    lock, cache, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    pins = pinned_hashes(lock)
    found = set()
    dest.mkdir(parents=True, exist_ok=True)
    for sdist in sorted(cache.glob("*.tar.gz")):
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest in pins:
            found.add(digest)
            unpack_sdist(sdist, pins[digest], dest)
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
