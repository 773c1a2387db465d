"""`smartpop relay plan|apply|verify|rollback|status|task|request-rollback`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Tuple

from smartpop.config import store
from smartpop.errors import StateError
from smartpop.paths import Paths
from smartpop.relay import patcher
from smartpop.relay import postfix as pf
from smartpop.relay.desired import Desired, desired_from_relay, main_block_lines
from smartpop.relay.service import relay_status, request_file, request_rollback

LOG = logging.getLogger("smartpop.relay")
EXIT_OK, EXIT_DRIFT = 0, 1


def _postfix_dir(args: argparse.Namespace) -> Path:
    raw = getattr(args, "postfix_dir", None) or pf.default_postfix_dir()
    directory = Path(raw).resolve()
    if not (directory / "main.cf").is_file():
        raise StateError(f"{directory} has no main.cf: pass --postfix-dir DIR")
    return directory


def _desired(paths: Paths, directory: Path, tools: pf.Tools) -> Tuple[Desired, str]:
    config = store.load(paths)  # schema validation; desired_from_relay validates again
    map_type = pf.map_type(tools)
    return desired_from_relay(config.relay, str(directory), map_type), map_type


def _plan_text(desired: Desired, directory: Path) -> str:
    lines = [f"Postfix dir: {directory}"]
    if not desired.params:
        lines.append("relay disabled: remove the SmartPop block and maps (if any)")
    for line in main_block_lines(desired):
        name, _, value = line.partition(" = ")
        lines.append(f"  main.cf   {name} = {value}")
    for name, content in sorted(desired.maps.items()):
        count = len(content.splitlines())
        lines.append(f"  map file  {directory / name} (mode 0600, {count} entr{'y' if count == 1 else 'ies'})")
    for line in desired.master_lines:
        lines.append(f"  master.cf {line}")
    changes = patcher.planned_files(desired, directory)
    lines.append("files to change: " + (", ".join(sorted(changes)) or "none"))
    return "\n".join(lines)


def cmd_relay(paths: Paths, args: argparse.Namespace) -> int:
    """Dispatch the relay actions."""
    action = args.action
    if action == "request-rollback":
        request_rollback(paths)
        print("rollback requested; the root task carries it out on its next run")
        return EXIT_OK
    if action == "status":
        config = store.load(paths)
        report = relay_status(paths, config, getattr(args, "postfix_dir", None))
        print(json.dumps(report, indent=1) if getattr(args, "json", False)
              else f"relay: {report['state']}: {report['detail']}\nroot task: {report['task_command']}")
        return EXIT_OK
    directory = _postfix_dir(args)
    tools = pf.locate(getattr(args, "postfix_bin", None))
    relay_dir = paths.relay_dir
    if action == "rollback" or (action == "task" and request_file(paths).exists()):
        outcome = patcher.rollback(relay_dir, directory, tools, force=getattr(args, "force", False))
        if action == "task" or request_file(paths).exists():
            request_file(paths).unlink()
        patcher.write_status(relay_dir, "rolled back", "; ".join(outcome.messages), None, directory)
        print("\n".join(outcome.messages))
        return EXIT_OK
    desired, map_type = _desired(paths, directory, tools)
    if action == "plan":
        print(_plan_text(desired, directory))
        return EXIT_OK
    if action == "verify":
        problems = patcher.verify(directory, tools, desired)
        drifted = patcher.changed_since_apply(relay_dir, directory)
        if problems:
            print("drift:\n  " + "\n  ".join(problems + [f"changed since apply: {n}" for n in drifted]))
            return EXIT_DRIFT
        print("in place: the live Postfix config matches the relay settings")
        return EXIT_OK
    # apply (and task without a rollback request)
    problems_before = patcher.verify(directory, tools, desired) if action == "task" else []
    outcome = patcher.apply(relay_dir, directory, tools, desired, map_type)
    detail = "; ".join(outcome.messages)
    if problems_before and outcome.changed:
        detail = "re-applied after drift: " + detail
    _write_status(relay_dir, directory, desired, map_type, detail)
    for message in outcome.messages:
        LOG.info("relay: %s", message)
    print(detail)
    return EXIT_OK


def _write_status(relay_dir: Path, directory: Path, desired: Desired, map_type: str, detail: str) -> None:
    patcher.write_status(relay_dir, "applied" if desired.params else "disabled", detail,
                         desired.fingerprint(), directory)
    # map_type lets the unprivileged status compute the same fingerprint.
    status_path = relay_dir / "status.json"
    data = json.loads(status_path.read_text(encoding="utf-8"))
    data["map_type"] = map_type
    from smartpop.fsutil import atomic_write

    atomic_write(status_path, json.dumps(data, indent=1).encode(), 0o644)
