"""Run `smartpop` with a crash hook: SIGKILL the process at the Nth pass of a step boundary.

    SMARTPOP_CRASH_AT=after_data SMARTPOP_CRASH_NTH=2 python -m support.crashrun --data DIR fetch

The hook is the checkpoint of the guards this process's `fetch` runs with (the seam the runner
calls at each step boundary: after_retr, after_note, after_data, after_record, after_dele,
before_quit): commands.cmd_fetch is given these guards instead of building its own.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

from smartpop.cli import main
from smartpop.collector import commands
from smartpop.collector.concurrency import Guards


def install() -> None:
    """Arm the hook from the environment."""
    step = os.environ.get("SMARTPOP_CRASH_AT", "")
    nth = int(os.environ.get("SMARTPOP_CRASH_NTH", "1"))
    seen = {"count": 0}
    guards = Guards()

    def hook(name: str) -> None:
        if name == step:
            seen["count"] += 1
            if seen["count"] == nth:
                if name == "after_note":
                    # Inside the hand-over window on purpose: the note is durable, the dot unsent.
                    os.kill(os.getpid(), signal.SIGKILL)
                # Other delivery threads may be between their durable note and their dot:
                # a kill there is not a step boundary (concurrency.HandOver says why).
                with guards.handover.quiet():
                    os.kill(os.getpid(), signal.SIGKILL)

    guards.checkpoint = hook
    # cli's `fetch` imports cmd_fetch when it runs, so it finds this one.
    commands.cmd_fetch = functools.partial(commands.cmd_fetch, guards=guards)  # type: ignore[assignment]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
