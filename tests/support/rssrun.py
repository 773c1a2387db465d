"""Run `smartpop ARGS` and print the process's own peak RSS (KiB) as the last stdout line.

VmHWM from /proc/self/status is used, not getrusage's ru_maxrss: Linux carries ru_maxrss
over fork+exec from the parent (here a pytest process that built a 50 MB message), while
VmHWM belongs to this process's own address space.
"""

from __future__ import annotations

import resource
import sys

from smartpop.cli import main


def peak_rss_kib() -> int:
    """This process's high-water resident set size in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    code = main(sys.argv[1:])
    print(f"maxrss_kib={peak_rss_kib()}", flush=True)
    sys.exit(code)
