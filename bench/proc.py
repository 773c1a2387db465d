"""Run one tool as a child process and measure it: wall time, CPU time and peak RSS.

The tool runs under GNU `/usr/bin/time`, which reports its child's rusage (ru_maxrss
covers the largest of the tool and every descendant it waited for, e.g. fetchmail's
sendmail). Why not os.wait4() on a child forked by this harness: Linux folds the
pre-exec RSS of the forked harness image (~25 MB of Python) into the child's maxrss,
which would hide fetchmail's 8 MB. Without /usr/bin/time we fall back to wait4 and say so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TIME = shutil.which("time", path="/usr/bin:/bin")
RSS_NOTE = "" if TIME else "peak RSS from wait4: includes ~25 MB of the forked harness"

# Children still running: killed (by process group) when the harness is interrupted.
_running: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class Measured:
    """What one child run cost."""

    returncode: int
    wall: float
    cpu: float
    peak_rss_mb: float
    output: str
    started: float = 0.0
    timed_out: bool = False
    # CPU-seconds every process used on the harness's CPUs during the run (servers included),
    # and how busy those CPUs were (0..1): the machine, not just the tool.
    machine_busy: float | None = None
    machine_util: float | None = None


def cpu_times() -> tuple[float, float] | None:
    """(busy, idle) seconds so far of the CPUs this process may run on, from /proc/stat."""
    wanted = {f"cpu{n}" for n in os.sched_getaffinity(0)}
    tick = os.sysconf("SC_CLK_TCK")
    busy = idle = 0
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                fields = line.split()
                if fields and fields[0] in wanted:
                    # user nice system idle iowait irq softirq steal
                    values = [int(x) for x in fields[1:9]]
                    busy += values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
                    idle += values[3] + values[4]
    except (OSError, ValueError, IndexError):
        return None
    return busy / tick, idle / tick


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float = 1800.0, log: Path | None = None) -> Measured:
    """Run `cmd` to completion; stdout+stderr go to `log` (and the returned text)."""
    out_path = log or Path(f"/tmp/bench-out-{os.getpid()}-{time.monotonic_ns()}.log")
    stat_path = out_path.with_suffix(".time")
    if TIME:
        cmd = [TIME, "-f", "%M %U %S", "-o", str(stat_path), *cmd]
    timed_out = threading.Event()
    with open(out_path, "wb") as out:
        before = cpu_times()
        start = time.perf_counter()
        # A new session: the whole tree (fetchmail -> sendmail -> postdrop) can be killed at once.
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        _running[proc.pid] = proc

        def expire() -> None:
            timed_out.set()
            kill_group(proc)

        timer = threading.Timer(timeout, expire)
        timer.start()
        reaped = False
        after = None
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            after = cpu_times()
            reaped = True
        finally:
            timer.cancel()
            if not reaped:  # interrupted (Ctrl-C): take the whole tree down with us
                kill_group(proc)
                proc.wait(10)
            _running.pop(proc.pid, None)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    if log is None:
        out_path.unlink()
    cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0
    if TIME and stat_path.exists():
        # last line "MAXRSS_KB USER SYS"; a line before it says if the tool died of a signal
        lines = stat_path.read_text().strip().splitlines()  # empty when time(1) itself was killed
        fields = lines[-1].split() if lines else []
        if len(fields) == 3:
            rss, cpu = int(fields[0]) / 1024.0, float(fields[1]) + float(fields[2])
        stat_path.unlink()
    busy = util = None
    if before is not None and after is not None:
        busy, idle = after[0] - before[0], after[1] - before[1]
        util = busy / (busy + idle) if busy + idle > 0 else None
    return Measured(proc.returncode, wall, cpu, rss, text, start, timed_out.is_set(), busy, util)


def start(cmd: list[str], *, env: dict[str, str] | None = None, log: Path,
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """Start a long-running child (the daemon of the IDLE benches) in its own session."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=pass_fds)
    _running[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int | None:
    """SIGTERM a child started by start(), SIGKILL after `grace` seconds; its exit code."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait(10)
        except ProcessLookupError:
            pass
    _running.pop(proc.pid, None)
    return proc.returncode


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group (it is the group leader)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all() -> None:
    """Interrupt path: kill every child this harness started and reap it."""
    for proc in list(_running.values()):
        kill_group(proc)
        try:
            proc.wait(5)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass
    _running.clear()
