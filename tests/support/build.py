"""Building the .spk once per test session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent.parent


def build_spk(dist: Path, version: Optional[str] = None, source: Path = ROOT) -> Path:
    """Run build.sh into `dist` and return the path it printed last."""
    env = dict(os.environ, SMARTPOP_DIST=str(dist))
    if version:
        env["SMARTPOP_BUILD_VERSION"] = version
    proc = subprocess.run([str(source / "build.sh")], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"build.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])
