"""DSM 7's interpreter (a plain Python 3.8) for the tests that run code the way the NAS does.

Found as tests/run finds it, so no test names one machine's path: $SMARTPOP_PY38, else
`python3.8` on PATH, else the newest 3.8 under $PYENV_ROOT (default ~/.pyenv). A venv is
traced back to the installation it was made from: the tests need a plain interpreter, and some
copy its whole installation for an unprivileged user.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Tuple

PROBE = "import sys; print(sys.version_info[:2] == (3, 8)); print(sys.base_prefix)"


def _version(path: Path) -> Tuple[int, ...]:
    """(3, 8, 18) from .../versions/3.8.18/bin/python3.8, for picking the newest."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parents[1].name))


def _candidates() -> List[str]:
    named = os.environ.get("SMARTPOP_PY38", "")
    if named:
        return [named]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = sorted(pyenv.glob("3.8*/bin/python3.8"), key=_version, reverse=True)
    return [shutil.which("python3.8") or "", *map(str, installed)]


@functools.lru_cache(maxsize=None)
def python38_home() -> Optional[Path]:
    """The installation prefix of a plain Python 3.8, or None when the machine has none."""
    for candidate in _candidates():
        if not candidate:
            continue
        try:
            answer = subprocess.run([candidate, "-I", "-c", PROBE], capture_output=True, text=True, timeout=30,
                                    check=True).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            continue  # e.g. a pyenv shim for a version that is not installed
        if len(answer) == 2 and answer[0] == "True" and (Path(answer[1]) / "bin" / "python3.8").exists():
            return Path(answer[1])
    return None


def python38() -> Optional[Path]:
    """The plain Python 3.8 binary, or None when the machine has none."""
    home = python38_home()
    return None if home is None else home / "bin" / "python3.8"
