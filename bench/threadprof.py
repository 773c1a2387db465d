"""Run a module under cProfile in every thread: `python -m bench.threadprof OUT -m MODULE ARGS...`.

cProfile alone only sees the main thread, and SmartPop hands mail over in worker threads.
Each thread gets its own profiler; at exit all of them are merged into OUT (pstats format).
The clock is each thread's CPU time (time.thread_time): with several threads, wall-clock
own times would mostly show threads waiting for the GIL or for each other.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
import threading
import time
from typing import Any, List

_profiles: List[cProfile.Profile] = []
_lock = threading.Lock()


def _wrap_thread_run() -> None:
    original = threading.Thread.run

    def run(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with _lock:
            _profiles.append(profile)
        profile.enable()
        try:
            original(self, *args, **kwargs)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def _dump(out: str, main: cProfile.Profile) -> None:
    main.disable()
    stats = pstats.Stats(main)
    with _lock:
        for profile in _profiles:
            try:
                stats.add(profile)
            except TypeError:  # a thread that never ran any Python code
                pass
    stats.dump_stats(out)


def main() -> None:
    """Entry point: OUT -m MODULE ARGS."""
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python -m bench.threadprof OUT -m MODULE [ARGS...]")
    if sys.version_info >= (3, 12):
        # From 3.12 on cProfile runs on sys.monitoring, one profiler per interpreter: a worker
        # thread's enable() raises, the thread dies before its first task and the run hangs.
        raise SystemExit("bench.threadprof needs Python 3.11 or older (one cProfile per thread); "
                         "give bench/run --smartpop-python such an interpreter")
    out, module = sys.argv[1], sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    _wrap_thread_run()
    profile = cProfile.Profile(time.thread_time)
    atexit.register(_dump, out, profile)
    profile.enable()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
