"""The root Task Scheduler command: it runs only the relay bundle whose SHA-256 it carries.

DSM gives the package's code (target/) to the package user, so root must never execute, import
or interpret a file from there that it has not verified. The command the admin pastes carries
the bundle's hash; its bootstrap (BOOTSTRAP, run by DSM's root-owned /usr/bin/python3 with -I -S)
reads the bundle once, compares the hash and executes exactly the bytes it compared. The bundle
imports SmartPop from memory (tools/relay_bundle_stub.py). An upgrade ships a new bundle, so the
old command refuses until the admin pastes the new one; `task_state` tells the UI and status.
docs/RELAY.md ("Root task") has the reasoning.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from smartpop.paths import Paths, relay_bundle_file

SYSTEM_PYTHON = "/usr/bin/python3"  # DSM 7's own interpreter, root-owned
DSM_TARGET = Path("/var/packages/SmartPop/target")
MAX_BUNDLE = 8 * 1024 * 1024

# One line for Task Scheduler's script box. No single quotes (it is shell-quoted as a whole) and
# ASCII only. A missing bundle (package uninstalled) is one clear line, not a traceback.
BOOTSTRAP = (
    'import sys,os,hashlib;p=sys.argv[1];'
    'os.path.isfile(p) or sys.exit("smartpop: "+p+" is missing: SmartPop is not installed, '
    'delete this task in Task Scheduler");'
    f'b=open(p,"rb").read({MAX_BUNDLE});'
    'hashlib.sha256(b).hexdigest()==sys.argv[2] or sys.exit("smartpop: refused: "+p+" is not the '
    'relay code this task was set up for (SmartPop was updated, or the file was changed). '
    'Nothing was run. Copy the current command from SmartPop > Relay into this task.");'
    'exec(b)'
)

TASK_STATES = ("current", "outdated", "never", "unavailable")

# Set once, by the bundle's own entry point (tools/relay_bundle_stub.py), before cli.main runs.
_VERIFIED: Dict[str, Tuple[str, str]] = {}


def mark_verified(bundle: str, sha256: str) -> None:
    """Record that this process runs the bundle `bundle` whose hash the bootstrap checked."""
    _VERIFIED["bundle"] = (bundle, sha256)


def verified() -> Optional[Tuple[str, str]]:
    """(bundle path, sha256) when running as the verified root task, else None."""
    return _VERIFIED.get("bundle")


def bundle_sha256(path: Path) -> Optional[str]:
    """The SHA-256 of the bundle file, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read(MAX_BUNDLE)).hexdigest()
    except OSError:
        return None


def current_bundle(env: Optional[Mapping[str, str]] = None) -> Tuple[Path, Optional[str]]:
    """This installation's bundle path (as the admin should see it) and its hash."""
    running = verified()
    if running is not None:
        return Path(running[0]), running[1]
    path = relay_bundle_file(env)
    try:
        # On the NAS, name the stable /var/packages path rather than the volume it points to.
        stable = DSM_TARGET / "bin" / path.name
        if stable.resolve() == path.resolve():
            path = stable
    except OSError:
        pass
    return path, bundle_sha256(path)


def task_command(paths: Paths, python: str = SYSTEM_PYTHON, env: Optional[Mapping[str, str]] = None) -> str:
    """The exact line for DSM Task Scheduler (user root), or '' when no bundle is installed."""
    bundle, sha = current_bundle(env)
    if sha is None:
        return ""
    words = [python, "-I", "-S", "-c", BOOTSTRAP, str(bundle), sha, "--data", str(paths.data), "relay", "task"]
    return " ".join(shlex.quote(word) for word in words)


def task_facts() -> Dict[str, str]:
    """What root records in its status.json about the code it ran (no secrets)."""
    from smartpop import __version__

    running = verified()
    return {"bundle_sha256": running[1] if running else "", "version": __version__}


def task_state(last: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Whether the root task last ran this version's bundle: current, outdated, never or unavailable."""
    _, sha = current_bundle(env)
    ran = str(last.get("bundle_sha256") or "")
    facts: Dict[str, Any] = {"task_version": last.get("version"), "task_last_run": last.get("time")}
    if sha is None:
        facts["task_state"] = "unavailable"
    elif not last:
        facts["task_state"] = "never"
    elif ran == sha:
        facts["task_state"] = "current"
    else:
        facts["task_state"] = "outdated"
    return facts
