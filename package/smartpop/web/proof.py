"""The secret shared by the DSM CGI and the backend (file mode 0600, never in a browser)."""

from __future__ import annotations

import secrets

from smartpop import fsutil
from smartpop.paths import Paths

PROOF_HEADER = "X-SmartPop-Proof"


def load_or_create_secret(paths: Paths) -> str:
    """Return the shared secret, creating it on first use."""
    try:
        value = paths.web_secret.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = ""
    if len(value) < 32:
        value = secrets.token_hex(32)
        fsutil.atomic_write(paths.web_secret, (value + "\n").encode("ascii"), mode=0o600)
    return value
