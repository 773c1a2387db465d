"""Command line: `smartpop [--data DIR] COMMAND`. The only place that maps errors to exit codes.

Exit codes: 0 success; 1 some account or step failed (mail stays on the server), or `health`
found a problem (warnings alone: 0); 2 configuration or usage error (the message names the key and the fix).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from smartpop import __version__
from smartpop.errors import (
    ConfigError,
    SmartPopError,
    TemporaryError,
    UsageError,
)
from smartpop.log import redact, redact_known, setup_logging
from smartpop.paths import Paths, open_data_dir, resolve_data_dir_source

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns the exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `smartpop --help`)")


def build_parser() -> argparse.ArgumentParser:
    """Define the CLI contract of docs/CONTRACTS.md ("Command line")."""
    parser = _Parser(prog="smartpop",
                     description="SmartPop: collect provider mail into MailPlus and relay outgoing mail.")
    parser.add_argument("--version", action="version", version=f"SmartPop {__version__}")
    parser.add_argument("--data", metavar="DIR", help="data directory (default: $SMARTPOP_DATA, else $SYNOPKG_PKGVAR)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the web backend and the collector daemon")
    serve.add_argument("--dev", action="store_true",
                       help="development: also accept a one-time login token printed at start")
    fetch = sub.add_parser("fetch", help="one collection pass for all enabled accounts, then exit")
    fetch.add_argument("--account", metavar="NAME", help="collect only this account")
    relay = sub.add_parser("relay", help="show, apply, verify or roll back the MailPlus relay settings")
    relay.add_argument("action", choices=["plan", "apply", "verify", "rollback", "status", "task",
                                          "request-rollback"])
    relay.add_argument("--postfix-dir", metavar="DIR", help="Postfix config dir (default: MailPlus's)")
    relay.add_argument("--postfix-bin", metavar="DIR", help="directory of postconf/postmap/postfix")
    relay.add_argument("--maps-dir", metavar="DIR",
                       help="root-owned dir for SmartPop's map files (default: MailPlus's etc/smartpop)")
    relay.add_argument("--customize-dir", metavar="DIR",
                       help="MailPlus's main.cf override dir (default: MailPlus's etc/customize/postfix)")
    relay.add_argument("--force", action="store_true", help="rollback: restore even files changed since apply")
    relay.add_argument("--json", action="store_true", help="status: machine-readable output")
    sub.add_parser("check", help="validate the config and test every account and the delivery target")
    status = sub.add_parser("status", help="per-account last run, counts, errors; relay state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    doctor = sub.add_parser("doctor", help="print every fact SmartPop relies on and whether it holds "
                                           "(read-only; for bug reports)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--postfix-dir", metavar="DIR", help="Postfix config dir (default: MailPlus's)")
    doctor.add_argument("--postfix-bin", metavar="DIR", help="directory of postconf")
    health = sub.add_parser("health", help="check the mail setup: DNS (MX, SPF, DMARC, DKIM), relay login, "
                                           "certificates (exit 1 when a check finds a problem)")
    health.add_argument("--json", action="store_true", help="machine-readable output")
    health.add_argument("--round-trip", action="store_true",
                        help="send one test message through the relay provider to the catch-all mailbox and wait "
                             "until the collector fetches it back")
    health.add_argument("--wait", type=int, default=None, metavar="SECONDS",
                        help="--round-trip: wait at most this long (default: until it expires, 10 minutes)")
    trail = sub.add_parser("trail", help="search the mail trail: what happened to each collected message, newest "
                                         "first (docs/TRAIL.md)")
    trail.add_argument("--since", metavar="WHEN", help="from this time: 2h, 3d, 1w ago, today, an ISO date or time "
                                                       "(2026-03-01T14:30), or unix seconds")
    trail.add_argument("--until", metavar="WHEN", help="before this time (a date includes that day)")
    trail.add_argument("--sender", metavar="TEXT", help="part of the envelope sender or the From address")
    trail.add_argument("--rcpt", metavar="TEXT", help="part of a recipient's address")
    trail.add_argument("--message-id", dest="message_id", metavar="ID", help="the Message-ID (with or without <>)")
    trail.add_argument("--account", metavar="NAME", help="only this account")
    trail.add_argument("--outcome", metavar="LIST",
                       help="delivered, fallback, waiting, failed, duplicate, consumed (comma-separated)")
    trail.add_argument("--limit", type=int, default=50, metavar="N", help="show at most N messages (default 50)")
    trail.add_argument("--json", action="store_true", help="machine-readable output (with every copy and reply)")
    # Internal: used by scripts/postinst. Reads wizard_* env vars, never argv.
    sub.add_parser("wizard-config", help="internal (postinst): write config.json from the wizard_* env vars")
    return parser


def _cmd_wizard_config(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.config import store
    from smartpop.config.wizard import WIZARD_KEYS, document_from_wizard

    if any(key in os.environ for key in WIZARD_KEYS):
        existing = store.read_document(paths.config) if paths.config.exists() else None
        config = store.save_document(paths, document_from_wizard(os.environ, existing))
        print(f"configuration written to {paths.config}")
    else:
        # Upgrade: nothing to merge; loading migrates an older schema and validates.
        config = store.load(paths)
        print(f"configuration kept: {paths.config}")
    print(f"web_port={config.web.port}")
    return EXIT_OK


def _cmd_status(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.status import build_status, format_status

    report = build_status(paths)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_status(report))
    return EXIT_CONFIG if report.get("config_error") else EXIT_OK


def _cmd_serve(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.collector.concurrency import Guards
    from smartpop.collector.service import start_daemon
    from smartpop.config import store
    from smartpop.web.server import ensure_can_listen, require_web_libraries, serve

    config = store.load(paths)
    dev = getattr(args, "dev", False)
    ensure_can_listen(paths, config.web.port if dev else None)
    require_web_libraries()
    collector = start_daemon(paths, config, Guards())  # the process's guards: the web app shares them
    try:
        serve(paths, config, dev=dev, collector=collector)
    finally:
        # serve() returns on SIGTERM; each collector worker finishes the message in hand and QUITs.
        collector.stop(timeout=120)
    return EXIT_OK


Command = Callable[[Paths, argparse.Namespace], int]


# Each command imports its implementation only when it runs (keeps --help fast and light).
def _cmd_fetch(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.collector.commands import cmd_fetch

    return cmd_fetch(paths, args)


def _cmd_check(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.collector.commands import cmd_check

    return cmd_check(paths, args)


def _cmd_relay(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.relay.commands import cmd_relay

    return cmd_relay(paths, args)


def _cmd_doctor(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.doctor.command import cmd_doctor

    return cmd_doctor(paths, args)


def _cmd_health(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.health.command import cmd_health

    return cmd_health(paths, args)


def _cmd_trail(paths: Paths, args: argparse.Namespace) -> int:
    from smartpop.trail.command import cmd_trail

    return cmd_trail(paths, args)


COMMANDS: Dict[str, Command] = {
    "serve": _cmd_serve,
    "fetch": _cmd_fetch,
    "relay": _cmd_relay,
    "check": _cmd_check,
    "status": _cmd_status,
    "doctor": _cmd_doctor,
    "health": _cmd_health,
    "trail": _cmd_trail,
    "wizard-config": _cmd_wizard_config,
}


def _owned_by_other(directory: Path) -> bool:
    """Whether the data dir exists and belongs to someone other than us (root running for DSM)."""
    try:
        return os.stat(directory).st_uid != os.geteuid()
    except OSError:
        return False


def _refuse_unverified_root(paths: Paths, command: str) -> None:
    """Root may run only `relay`, and only from the hash-verified bundle, on a package's DATA.

    This code itself may have been changed by the package user when it runs from target/, so this
    is no security boundary (the verified bundle is, docs/RELAY.md): it turns the old, unsafe
    Task Scheduler line into a clear refusal that shows the line to use instead.
    """
    from smartpop.relay import roottask

    if roottask.verified() is not None:
        if command != "relay":
            raise UsageError("the relay bundle runs `relay` commands only")
        return
    if os.geteuid() != 0 or not _owned_by_other(paths.data) or command == "doctor":
        return  # doctor only reads, and it writes nothing into DATA (see main)
    if command == "relay":
        line = roottask.task_command(paths)
        raise UsageError("refusing to run as root from the package's own files, which the package user can "
                         "change. In DSM Task Scheduler (user root) use this command instead:\n" + (line or
                         "(no relay bundle in this installation: reinstall SmartPop)"))
    raise UsageError(f"refusing to run `{command}` as root on {paths.data}, which belongs to the package's "
                     "user: files root creates there would lock the package out. Run it as that user, or "
                     "let the running package do it (the service collects on its own schedule)")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_CONFIG
        data, source = resolve_data_dir_source(args.data)
        paths = Paths(data)
        _refuse_unverified_root(paths, args.command)
        # Root (the relay task) writes nothing into DATA, which the package user owns: a
        # root-owned lock or log there would lock the package out, and a planted symlink
        # would redirect root's writes. Its output goes to Task Scheduler instead. doctor is
        # read-only for everyone: it must work on a broken DATA, and as root, without touching it.
        read_only = args.command == "doctor" or (
            os.geteuid() == 0 and args.command == "relay" and _owned_by_other(paths.data))
        if not read_only:
            # postinst creates DATA before wizard-config; any other command needs it to exist.
            open_data_dir(paths, source, create=args.command == "wizard-config")
        level = logging.DEBUG if args.verbose else logging.INFO
        daemon = args.command == "serve"
        # The daemon logs to its rotated file only: its stderr (smartpop.out) is not rotated
        # and should hold nothing but start-up failures.
        to_file = (daemon or args.command in ("fetch", "relay")) and not read_only
        # `fetch` prints one summary line per account; the per-message routing lines go to the
        # log file only (a Task Scheduler mail of 2,000 of them helps nobody; -v shows them).
        quiet_console = args.command == "fetch" and not args.verbose and to_file
        setup_logging(paths.log_file if to_file else None, level, stderr=not daemon,
                      stderr_level=logging.WARNING if quiet_console else logging.NOTSET)
        return COMMANDS[args.command](paths, args)
    except ConfigError as exc:
        # Validators build these from key names and their own words and never quote a secret:
        # mask registered secret values only, so `accounts[0].auth: is not a known setting` stays readable.
        print(f"smartpop: {redact_known(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"smartpop: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except PermissionError as exc:
        # A file in DATA changed owner or mode after the start-up check: one line, not a traceback.
        print(f"smartpop: {exc.filename or 'a file'}: {exc.strerror}. Fix: the files in the data directory "
              "must belong to the user that runs smartpop (chown -R that user DIR)", file=sys.stderr)
        return EXIT_CONFIG
    except TemporaryError as exc:
        print(f"smartpop: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except SmartPopError as exc:
        print(f"smartpop: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
