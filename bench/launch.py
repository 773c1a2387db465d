"""Start SmartPop for the quiet bench: `python bench/launch.py --data DIR serve` (= `python -m smartpop ...`).

Two additions, both outside SmartPop's own code and both cheap:

- Each thread's OS name (/proc/PID/task/TID/comm) becomes its Python name, so the bench can
  say which thread wakes how often (Python before 3.14 leaves every thread named after the
  interpreter). The name is written once when the thread starts, to procfs (not to disk).
- SIGUSR2 writes one line of getrusage() to the fd named by $BENCH_RUSAGE_FD: the voluntary
  and involuntary context switches and the blocks written of every thread the process ever
  had, those that already ended included (/proc/PID/task only lists the living ones).
  The harness sends it at the start and at the end of the window: two wake-ups in all.

Runs under the interpreter that runs SmartPop (Python 3.8 on DSM 7): stdlib only.
"""

from __future__ import annotations

import os
import sys

# Run as a script, sys.path[0] is bench/: drop it, so that bench/cgi.py and friends can never
# shadow a standard module SmartPop imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import resource
import runpy
import signal
import threading
from types import FrameType
from typing import Any, Optional

COMM_MAX = 15  # TASK_COMM_LEN - 1


def os_thread_name(name: str) -> str:
    """The 15 characters Linux keeps: SmartPop's common 'smartpop-' prefix dropped."""
    for prefix in ("smartpop-", "SmartPop-"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name[:COMM_MAX] or "thread"


def _set_comm(name: str) -> None:
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(os_thread_name(name))
    except OSError:
        pass


def _name_threads() -> None:
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        _set_comm(self.name)
        original(self, *args, **kwargs)

    threading.Thread._bootstrap_inner = bootstrap  # type: ignore[attr-defined]
    _set_comm("main")


def _report_rusage(fd: int) -> None:
    def handler(signum: int, frame: Optional[FrameType]) -> None:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = " ".join(str(int(v)) for v in (me.ru_nvcsw, me.ru_nivcsw, me.ru_oublock,
                                               kids.ru_nvcsw, kids.ru_nivcsw, kids.ru_oublock))
        try:
            os.write(fd, (line + "\n").encode())
        except OSError:
            pass

    signal.signal(signal.SIGUSR2, handler)


def main() -> None:
    """Prepare, then run SmartPop's CLI as `python -m smartpop` would."""
    fd = os.environ.pop("BENCH_RUSAGE_FD", "")
    if fd.isdigit():
        _report_rusage(int(fd))
    _name_threads()
    sys.argv[0] = "smartpop"
    runpy.run_module("smartpop", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
