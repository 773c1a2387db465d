"""The installation's loop-marker key: 32 random bytes in DATA/loop.secret (mode 0600), made once.

The X-SmartPop-Loop marker is an HMAC under this key (recipients.loop_marker), so nobody
outside can write a marker that this installation takes for its own. The key never leaves
the data dir: it is not logged, not shown in the UI and not part of config.json.
"""

from __future__ import annotations

import logging
import secrets

from smartpop import fsutil
from smartpop.paths import Paths

log = logging.getLogger(__name__)

FILE_NAME = "loop.secret"
KEY_BYTES = 32


def _read(paths: Paths) -> bytes:
    try:
        text = (paths.data / FILE_NAME).read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return b""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        return b""
    return key if len(key) >= KEY_BYTES else b""


def load_or_create(paths: Paths) -> bytes:
    """The key, created on first use; a daemon and a `fetch` starting together get the same one."""
    key = _read(paths)
    if key:
        return key
    paths.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    with fsutil.locked(paths.locks / "loop-secret.lock"):
        key = _read(paths)  # the other process may have made it while this one waited
        if not key:
            if (paths.data / FILE_NAME).exists():
                log.warning("%s is unreadable or too short; a new loop-marker key replaces it (markers written "
                            "under the old key no longer count)", FILE_NAME)
            key = secrets.token_bytes(KEY_BYTES)
            fsutil.atomic_write(paths.data / FILE_NAME, (key.hex() + "\n").encode("ascii"), mode=0o600)
    return key
