"""`smartpop relay plan|apply|verify|rollback|status|task|request-rollback`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, Tuple

from smartpop.config import store
from smartpop.errors import StateError, UsageError
from smartpop.paths import Paths
from smartpop.relay import layout as layout_mod
from smartpop.relay import patcher, relayfacts, roottask, trust
from smartpop.relay import postfix as pf
from smartpop.relay.desired import Desired, desired_from_relay, main_block_lines
from smartpop.relay.layout import Layout
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


def _layout(args: argparse.Namespace, directory: Path) -> Layout:
    raw = getattr(args, "maps_dir", None) or layout_mod.default_maps_dir()
    if raw is None:
        raise UsageError(f"MailPlus Server's package etc ({layout_mod.MAILPLUS_PKG_ETC}) was not found, so there "
                         "is no default place for SmartPop's map files: name a root-owned directory outside "
                         "the Postfix dir with --maps-dir DIR")
    customize = getattr(args, "customize_dir", None) or layout_mod.CUSTOMIZE_DIR
    # abspath, not resolve: main.cf names the maps by this path, through DSM's own symlinks.
    return Layout(directory, Path(os.path.abspath(raw)), Path(os.path.abspath(customize)))


def _desired(paths: Paths, layout: Layout, tools: pf.Tools) -> Tuple[Desired, str, str]:
    config = store.load_untrusted(paths)  # schema validation; desired_from_relay validates again
    map_type = pf.map_type(tools, str(layout.postfix_dir))
    ca_file = trust.find_ca_file()
    return desired_from_relay(config.relay, str(layout.maps_dir), map_type, ca_file), map_type, ca_file


def _plan_text(desired: Desired, layout: Layout) -> str:
    directory = layout.postfix_dir
    _, why = layout_mod.customize_state(layout.customize_dir, directory)
    lines = [f"Postfix dir: {directory}", f"maps dir: {layout.maps_dir}",
             f"mechanism: {layout.mechanism} ({why})"]
    if not desired.params:
        lines.append("relay disabled: remove the SmartPop block and maps (if any)")
    for line in main_block_lines(desired):
        name, _, value = line.partition(" = ")
        lines.append(f"  main.cf   {name} = {value}")
    for name, content in sorted(desired.maps.items()):
        count = len(content.splitlines())
        lines.append(f"  map file  {layout.maps_dir / name} (mode 0600, {count} entr{'y' if count == 1 else 'ies'})")
    for line in desired.master_lines:
        lines.append(f"  master.cf {line}")
    changes = patcher.planned_files(desired, layout)
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
        report = relay_status(paths, config, getattr(args, "postfix_dir", None), getattr(args, "maps_dir", None),
                              getattr(args, "customize_dir", None))
        print(json.dumps(report, indent=1) if getattr(args, "json", False)
              else f"relay: {report['state']}: {report['detail']}\nmechanism: {report['mechanism']}"
                   f"\nroot task: {report['task_command']}")
        return EXIT_OK
    directory = _postfix_dir(args)
    layout = _layout(args, directory)
    tools = pf.locate(getattr(args, "postfix_bin", None))
    if action in ("plan", "verify"):
        # Read-only: never create the state dir here (an unprivileged caller would own it).
        desired, _, _ = _desired(paths, layout, tools)
        if action == "plan":
            print(_plan_text(desired, layout))
            return EXIT_OK
        problems = patcher.verify(layout, tools, desired)
        state = trust.state_dir_name(paths.relay_dir)
        drifted = patcher.changed_since_apply(state, layout) if state.is_dir() else []
        if problems:
            print("drift:\n  " + "\n  ".join(problems + [f"changed since apply: {n}" for n in drifted]))
            return EXIT_DRIFT
        print("in place: the live Postfix config matches the relay settings")
        return EXIT_OK
    if action == "rollback" or (action == "task" and request_file(paths).exists()):
        with _state_dir(paths) as state, _maps_dir(layout):
            return _rollback(paths, state, layout, tools, getattr(args, "force", False))
    # apply (and task without a rollback request): validate everything before any write.
    desired, map_type, ca_file = _desired(paths, layout, tools)
    with _state_dir(paths) as state, _maps_dir(layout):
        problems_before = patcher.verify(layout, tools, desired) if action == "task" else []
        outcome = patcher.apply(state, layout, tools, desired, map_type)
        detail = "; ".join(outcome.messages)
        if problems_before and outcome.changed:
            detail = "re-applied after drift: " + detail
        patcher.write_status(state, "applied" if desired.params else "disabled", detail, desired.fingerprint(),
                             directory, {"map_type": map_type, "ca_file": ca_file, **_layout_facts(layout),
                                         **roottask.task_facts()})
        relayfacts.record(state, tools, directory)  # for the Health page's open-relay check
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


@contextlib.contextmanager
def _maps_dir(layout: Layout) -> Iterator[None]:
    """Check (creating) SmartPop's maps dir before anything is written; refuse a foreign one."""
    fd = trust.open_maps_dir(layout.maps_dir, layout.postfix_dir)
    try:
        yield
    finally:
        os.close(fd)


def _layout_facts(layout: Layout) -> Dict[str, str]:
    """Where things live, for status (no secrets)."""
    return {"maps_dir": str(layout.maps_dir), "customize_dir": str(layout.customize_dir),
            "mechanism": layout.mechanism}


def _rollback(paths: Paths, state: Path, layout: Layout, tools: pf.Tools, force: bool) -> int:
    outcome = patcher.rollback(state, layout, tools, force=force)
    request = request_file(paths)
    if os.path.lexists(request):
        os.unlink(request)  # unlink never follows a symlink the package user may have put there
    patcher.write_status(state, "rolled back", "; ".join(outcome.messages), None, layout.postfix_dir,
                         {**_layout_facts(layout), **roottask.task_facts()})
    relayfacts.record(state, tools, layout.postfix_dir)
    print("\n".join(outcome.messages))
    return EXIT_OK

