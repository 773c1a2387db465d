"""The header every result carries: when, on what machine, with which versions, how busy."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_set() -> str:
    """Which CPUs the runs could use (bench/run --cpus pins them)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) == os.cpu_count():
        return f"runs use all {len(allowed)} CPUs"
    return "runs pinned to CPU " + ",".join(str(n) for n in allowed)


def memory_gib() -> float:
    """Total RAM."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def loadavg() -> str:
    """1/5/15-minute load averages: the machine is shared, so say how busy it was."""
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def git_state() -> str:
    """The last commit touching package/, and whether package/ has uncommitted changes (others work in it)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", "--", "package"],
                              capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "package"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (f" (+ {len(dirty.splitlines())} uncommitted file(s) under package/)" if dirty else "")


def header(title: str, versions: dict[str, str], smartpop_python: str) -> str:
    """Markdown lines: date, machine, Python, tool versions, load."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sp_py = interpreter_version(smartpop_python)
    lines = [f"### {title}", "",
             f"- date: {now}",
             f"- machine: {os.cpu_count()} CPU, {cpu_model()}, {memory_gib():.0f} GiB RAM, "
             f"{platform.system()} {platform.release()}; {cpu_set()}",
             f"- Python: harness and baseline {platform.python_version()}, SmartPop under {sp_py} ({smartpop_python})",
             f"- SmartPop: {git_state()}",
             "- peers: " + "; ".join(f"{k} {v}" for k, v in versions.items()),
             f"- load average at start (shared machine): {loadavg()}", ""]
    return "\n".join(lines)


def interpreter_version(python: str) -> str:
    """The version of another Python interpreter, e.g. '3.8.18' ('' if it does not answer)."""
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def python_version() -> str:
    """The harness's Python."""
    return sys.version.split()[0]
