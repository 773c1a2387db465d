"""The relay bundle built from this checkout, and the root task's argv as Task Scheduler runs it."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import filelock

from smartpop.relay.roottask import BOOTSTRAP, bundle_sha256

REPO = Path(__file__).resolve().parents[2]
_built: Optional[Path] = None


def built_bundle() -> Path:
    """Build tools/relay_bundle.py's output from the source tree once per test process."""
    global _built
    if _built is None or not _built.is_file():
        sys.path.insert(0, str(REPO / "tools"))
        try:
            import relay_bundle
        finally:
            sys.path.remove(str(REPO / "tools"))
        out = Path(tempfile.mkdtemp(prefix="smartpop-bundle-")) / "smartpop-relay.py"
        out.parent.chmod(0o755)
        relay_bundle.build(REPO / "package", out, [Path(filelock.__file__).resolve().parent.parent])
        out.chmod(0o644)
        _built = out
    return _built


def root_task_argv(data_dir: Path, action: str, *extra: str, python: str = sys.executable,
                   bundle: Optional[Path] = None) -> List[str]:
    """argv of the verified root command (`python -I -S -c BOOTSTRAP BUNDLE SHA --data DATA relay ACTION ...`)."""
    path = bundle or built_bundle()
    sha = bundle_sha256(path)
    assert sha is not None
    return [python, "-I", "-S", "-c", BOOTSTRAP, str(path), sha, "--data", str(data_dir), "relay", action, *extra]


def bundle_env() -> dict:
    """Environment that makes the package side show this bundle's command."""
    return {"SMARTPOP_RELAY_BUNDLE": str(built_bundle()), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
