"""Relay functions other components call (status for UI/CLI, test mail, rollback request)."""

from __future__ import annotations

import json
import smtplib
import socket
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Dict, Optional

from smartpop.config import validators as v
from smartpop.errors import ConfigError, TemporaryError
from smartpop.paths import Paths
from smartpop.relay import maincf
from smartpop.relay.desired import Desired, desired_from_relay, main_block_lines

PACKAGE = "SmartPop"
REQUEST = "rollback.request"


def task_command(paths: Paths) -> str:
    """The exact line for DSM Task Scheduler (user: root, e.g. every 10 minutes); '' without a bundle."""
    from smartpop.relay.roottask import task_command as verified_command

    return verified_command(paths)


def request_file(paths: Paths) -> Path:
    """Where a pending rollback request is left for the root task."""
    return paths.relay_dir / REQUEST


def request_rollback(paths: Paths) -> None:
    """Leave a rollback request the root task carries out on its next run (preuninst)."""
    from smartpop.fsutil import atomic_write

    paths.relay_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(request_file(paths), b"rollback\n", 0o600)


def settings_live(paths: Paths) -> bool:
    """Whether SmartPop's relay settings may still be in MailPlus's Postfix (per root's last run)."""
    if not (paths.relay_dir / "state").exists():
        return False  # the root task never ran: Postfix was never touched
    last = _read_status(paths)
    # An unreadable status after root ran means "cannot tell": assume live, never skip a restore.
    return not last or last.get("state") not in ("disabled", "rolled back")


def _read_status(paths: Paths) -> Dict[str, Any]:
    # Root's task writes it into its own state dir (relay/trust.py); read-only here.
    try:
        data = json.loads((paths.relay_dir / "state" / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def relay_status(paths: Paths, config: Any, postfix_dir: Optional[str] = None, maps_dir: Optional[str] = None,
                 customize_dir: Optional[str] = None) -> Dict[str, Any]:
    """applied / pending / drift / disabled / unknown, read-only (works as the package user).

    `detail` is the English sentence the CLI prints; `reason` names it for the web UI, which says
    it in the admin's language (issue 13 §6). `mechanism` says how the relay survives MailPlus
    regenerating main.cf: `customize` (MailPlus's override file holds the block too) or `reapply`
    (the root task puts it back after drift)."""
    from smartpop.relay import layout
    from smartpop.relay.postfix import default_postfix_dir
    from smartpop.relay.roottask import task_state

    command = task_command(paths)
    last = _read_status(paths)
    directory = postfix_dir or str(last.get("postfix_dir") or default_postfix_dir() or "")
    # Before 0.3 the maps lived in the Postfix dir (no maps_dir in the status): the fingerprint
    # then differs from the new layout's, which is right, the task has not moved them yet.
    maps = maps_dir or str(last.get("maps_dir") or layout.default_maps_dir() or layout.MAPS_DIR)
    customize = customize_dir or str(last.get("customize_dir") or layout.CUSTOMIZE_DIR)
    mechanism = str(last.get("mechanism") or "")
    if mechanism not in (layout.CUSTOMIZE, layout.REAPPLY) or customize_dir:
        usable, _ = layout.customize_state(Path(customize), Path(directory or "/"))
        mechanism = layout.CUSTOMIZE if usable else layout.REAPPLY
    result: Dict[str, Any] = {"state": "unknown", "detail": "", "task_command": command,
                              "last_run": last.get("time"), "postfix_dir": directory, "maps_dir": maps,
                              "mechanism": mechanism}
    result.update(task_state(last))
    if request_file(paths).exists():
        result.update(state="pending", reason="rollback_requested",
                      detail="a rollback is requested; the root task carries it out on its next run")
        return result
    try:
        # The map type only changes the table prefix; the fingerprint uses the one last applied.
        ca_file = last.get("ca_file")
        desired = desired_from_relay(config.relay, maps, str(last.get("map_type") or "hash"),
                                     str(ca_file) if ca_file else None)
    except ConfigError as exc:
        result.update(state="unknown", reason="invalid_settings", detail=f"relay settings are invalid: {exc}")
        return result
    enabled = bool(desired.params)
    if last.get("state") == "rolled back" and not enabled:
        # Root restored MailPlus's files (or found nothing of ours) and the relay is off: nothing
        # is waiting for the task, so this is not 'pending'.
        result.update(state="disabled", reason="off_restored",
                      detail="the relay is off; MailPlus's own settings are in place")
        return result
    if last.get("fingerprint") != desired.fingerprint():
        if not enabled and not last:
            result.update(state="disabled", reason="never_changed",
                          detail="the relay is off and SmartPop never changed Postfix")
        else:
            result.update(state="pending", reason="not_applied_yet",
                          detail="the settings are saved but not applied yet: the root task "
                                                  "(DSM Task Scheduler) applies them on its next run")
        return result
    if last.get("state") == "drift":
        # The root task's own words stay in `detail`; the page quotes them.
        result.update(state="drift", reason="drift_reported",
                      detail=str(last.get("detail") or "Postfix files changed under SmartPop"))
        return result
    live = _live_block_matches(Path(directory), desired) if directory else None
    if live is False:
        result.update(state="drift", reason="maincf_rewritten",
                      detail="main.cf no longer holds SmartPop's settings (MailPlus may have "
                                            "rewritten it); the root task re-applies them")
    elif not enabled:
        result.update(state="disabled", reason="off_restored",
                      detail="the relay is off; MailPlus's own settings are in place")
    else:
        result.update(state="applied", reason="applied_live" if live else "applied_last_run",
                      detail="the relay settings are in place"
                      + ("" if live else " (according to the root task's last run)"))
    return result


def _live_block_matches(postfix_dir: Path, desired: Desired) -> Optional[bool]:
    try:
        text = maincf.decode((postfix_dir / "main.cf").read_bytes())
    except OSError:
        return None
    return maincf.block_body(text) == main_block_lines(desired)


def send_test_mail(config: Any, to_address: str) -> str:
    """Submit a short test message to MailPlus for `to_address`; return the server's answer."""
    recipient = v.as_address("to_address", to_address)
    host, port = config.delivery.host, int(config.delivery.port)
    message = EmailMessage()
    sender = recipient
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "SmartPop relay test"
    message.set_content("This test message was sent by SmartPop to check the outgoing relay.\n")
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.ehlo_or_helo_if_needed()
            refused = smtp.send_message(message, from_addr=sender, to_addrs=[recipient])
            if refused:
                raise TemporaryError(f"MailPlus refused {recipient}: {refused[recipient]}")
            code, text = smtp.noop()
            return f"accepted by {host}:{port} for {recipient} ({code} {text.decode('utf-8', 'replace')})"
    except smtplib.SMTPResponseException as exc:
        answer = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise TemporaryError(f"MailPlus at {host}:{port} refused the test mail: {exc.smtp_code} {answer}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise TemporaryError(f"MailPlus at {host}:{port} refused {recipient}: {exc.recipients}") from None
    except (OSError, smtplib.SMTPException, socket.timeout) as exc:
        raise TemporaryError(f"cannot send the test mail via {host}:{port}: {exc}") from None
