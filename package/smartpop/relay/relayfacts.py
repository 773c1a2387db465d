"""Root side of the open-relay check (issue 15 check 5): record what Postfix says about who may relay.

The root task runs `postconf` for a fixed list of parameters (no name comes from the package
user) and leaves the answer in its own state dir as `postconf.json` (mode 0644, like
status.json), which the unprivileged health check (health/openrelay.py) reads and words. Only
values are recorded, never interpreted here: root does as little as possible with them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List

from smartpop.errors import TemporaryError
from smartpop.fsutil import atomic_write
from smartpop.relay import postfix as pf

log = logging.getLogger(__name__)

FILE = "postconf.json"
PARAMS = ("smtpd_relay_restrictions", "smtpd_recipient_restrictions", "mynetworks", "mynetworks_style",
          "smtpd_sasl_auth_enable", "inet_interfaces")
MAX_VALUE = 4000  # a value longer than this is cut: the file is for reading, not for a full copy


def _lines(tools: pf.Tools, postfix_dir: Path, *options: str) -> List[str]:
    out = pf.run([tools.postconf, "-c", str(postfix_dir), *options]).stdout
    return out.decode("utf-8", "replace").splitlines()


def collect(tools: pf.Tools, postfix_dir: Path) -> Dict[str, Any]:
    """The effective values (-x expands $references), the smtpd services and their master.cf overrides."""
    params = pf.parse_postconf("\n".join(_lines(tools, postfix_dir, "-x", *PARAMS)))
    services: List[str] = []
    for line in _lines(tools, postfix_dir, "-M"):
        words = line.split()
        # master.cf: service type private unpriv chroot wakeup maxproc command...
        if len(words) >= 8 and words[1] == "inet" and words[7] == "smtpd":
            services.append(f"{words[0]}/{words[1]}")
    overrides: Dict[str, Dict[str, str]] = {}
    for name, value in pf.parse_postconf("\n".join(_lines(tools, postfix_dir, "-P", "-x"))).items():
        service, _, param = name.rpartition("/")
        if param in PARAMS and service in services:
            overrides.setdefault(service, {})[param] = value[:MAX_VALUE]
    return {"params": {p: params.get(p, "")[:MAX_VALUE] for p in PARAMS}, "services": services,
            "overrides": overrides}


def record(state: Path, tools: pf.Tools, postfix_dir: Path) -> None:
    """Write state/postconf.json (atomic, 0644); a failing postconf or write is logged, never raised."""
    data: Dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "postfix_dir": str(postfix_dir)}
    try:
        data.update(collect(tools, postfix_dir))
    except TemporaryError as exc:
        # The relay itself was applied; the check then says the facts could not be read.
        log.warning("relay: could not record MailPlus's relay restrictions: %s", exc)
        data["error"] = str(exc)
    try:
        atomic_write(state / FILE, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"), 0o644)
    except OSError as exc:
        # Facts for the Health page only: a full disk must not turn an applied relay into a
        # failed task (Task Scheduler would report it, and nothing about the relay is wrong).
        log.warning("relay: could not write %s: %s", state / FILE, exc)
