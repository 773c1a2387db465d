"""`smartpop doctor [--json] [--postfix-dir DIR] [--postfix-bin DIR]`: read-only, for bug reports."""

from __future__ import annotations

import argparse
import json

from smartpop.doctor import facts, probes
from smartpop.paths import Paths


def cmd_doctor(paths: Paths, args: argparse.Namespace) -> int:
    """Print every fact SmartPop relies on; exit 0 (the facts are the answer, warnings included)."""
    snap = probes.collect(paths, postfix_dir=getattr(args, "postfix_dir", None),
                          postfix_bin=getattr(args, "postfix_bin", None))
    data = facts.report(snap)
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(facts.format_text(data))
    return 0
