"""`smartpop relay plan|apply|verify|rollback|status|task|request-rollback`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Tuple

from smartpop.config import store
from smartpop.errors import StateError, UsageError
from smartpop.paths import Paths
from smartpop.relay import patcher, roottask, trust
from smartpop.relay import postfix as pf
from smartpop.relay.desired import Desired, desired_from_relay, main_block_lines
from smartpop.relay.service import relay_status, request_file, request_rollback, settings_live

LOG = logging.getLogger("smartpop.relay")
EXIT_OK, EXIT_DRIFT = 0, 1


def _postfix_dir(args: argparse.Namespace) -> Path:
    raw = getattr(args, "postfix_dir", None) or pf.default_postfix_dir()
    if raw is None:
        raise UsageError(f"MailPlus Server's Postfix configuration ({pf.MAILPLUS_ETC}/main.cf) was not found: "
                         "install MailPlus Server, or name the Postfix config dir with --postfix-dir DIR")
    directory = Path(raw).resolve()
    if not (directory / "main.cf").is_file():
        raise StateError(f"{directory} has no main.cf: pass --postfix-dir DIR")
    return directory


def _desired(paths: Paths, directory: Path, tools: pf.Tools) -> Tuple[Desired, str, str]:
    config = store.load_untrusted(paths)  # schema validation; desired_from_relay validates again
    map_type = pf.map_type(tools, str(directory))
    ca_file = trust.find_ca_file()
    return desired_from_relay(config.relay, str(directory), map_type, ca_file), map_type, ca_file


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
        if not settings_live(paths):
            # preuninst relies on this: no request file means there is nothing to wait for.
            print("nothing to restore: SmartPop's relay settings are not in MailPlus's Postfix")
            return EXIT_OK
        request_rollback(paths)
        print("rollback requested; the root task carries it out on its next run")
        return EXIT_OK
    if action == "status":
        config = store.load_untrusted(paths)
        report = relay_status(paths, config, getattr(args, "postfix_dir", None))
        print(json.dumps(report, indent=1) if getattr(args, "json", False)
              else f"relay: {report['state']}: {report['detail']}\nroot task: {report['task_command']}")
        return EXIT_OK
    directory = _postfix_dir(args)
    tools = pf.locate(getattr(args, "postfix_bin", None))
    if action in ("plan", "verify"):
        # Read-only: never create the state dir here (an unprivileged caller would own it).
        desired, _, _ = _desired(paths, directory, tools)
        if action == "plan":
            print(_plan_text(desired, directory))
            return EXIT_OK
        problems = patcher.verify(directory, tools, desired)
        state = trust.state_dir_name(paths.relay_dir)
        drifted = patcher.changed_since_apply(state, directory) if state.is_dir() else []
        if problems:
            print("drift:\n  " + "\n  ".join(problems + [f"changed since apply: {n}" for n in drifted]))
            return EXIT_DRIFT
        print("in place: the live Postfix config matches the relay settings")
        return EXIT_OK
    if action == "rollback" or (action == "task" and request_file(paths).exists()):
        with _state_dir(paths) as state:
            return _rollback(paths, state, directory, tools, getattr(args, "force", False))
    # apply (and task without a rollback request): validate everything before any write.
    desired, map_type, ca_file = _desired(paths, directory, tools)
    with _state_dir(paths) as state:
        problems_before = patcher.verify(directory, tools, desired) if action == "task" else []
        outcome = patcher.apply(state, directory, tools, desired, map_type, )
        detail = "; ".join(outcome.messages)
        if problems_before and outcome.changed:
            detail = "re-applied after drift: " + detail
        patcher.write_status(state, "applied" if desired.params else "disabled", detail, desired.fingerprint(),
                             directory, {"map_type": map_type, "ca_file": ca_file, **roottask.task_facts()})
    for message in outcome.messages:
        LOG.info("relay: %s", message)
    print(detail)
    return EXIT_OK


@contextlib.contextmanager
def _state_dir(paths: Paths) -> Iterator[Path]:
    """Root's own checkpoint dir, bound by file descriptor for the whole command."""
    fd, state = trust.open_state_dir(paths.relay_dir)
    try:
        yield state
    finally:
        os.close(fd)


def _rollback(paths: Paths, state: Path, directory: Path, tools: pf.Tools, force: bool) -> int:
    outcome = patcher.rollback(state, directory, tools, force=force)
    request = request_file(paths)
    if os.path.lexists(request):
        os.unlink(request)  # unlink never follows a symlink the package user may have put there
    patcher.write_status(state, "rolled back", "; ".join(outcome.messages), None, directory, roottask.task_facts())
    print("\n".join(outcome.messages))
    return EXIT_OK

