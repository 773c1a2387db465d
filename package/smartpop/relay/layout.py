"""Where the relay's files live: MailPlus's Postfix dir, SmartPop's maps dir, the customize override.

DSM replaces MailPlus's `target/` (and so `target/etc`) on every MailPlus upgrade, and MailPlus
may regenerate main.cf/master.cf from its own settings. SmartPop's own files (the maps, which hold
the relay password) therefore live in a root-owned dir outside `target/` and outside SmartPop's
DATA (the package user could swap files there that Postfix reads as root). main.cf refers to them
by absolute path. When MailPlus's persistent override `etc/customize/postfix/main.cf` exists
(one public source, UNCONFIRMED), SmartPop's block goes there as well, so MailPlus re-applies it
when it regenerates main.cf; otherwise the root task re-applies after drift. docs/RELAY.md.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

MAILPLUS_PKG_ETC = "/var/packages/MailPlus-Server/etc"
# MailPlus's persistent package etc (DSM keeps /var/packages/<pkg>/etc across package upgrades).
MAPS_DIR = MAILPLUS_PKG_ETC + "/smartpop"
CUSTOMIZE_DIR = MAILPLUS_PKG_ETC + "/customize/postfix"
CUSTOMIZE, REAPPLY = "customize", "reapply"
AREAS = ("postfix", "maps", "customize")


@dataclass(frozen=True)
class Layout:
    """The three directories one relay command works on."""

    postfix_dir: Path
    maps_dir: Path
    customize_dir: Path

    def dirs(self) -> Dict[str, Path]:
        """Checkpoint area -> directory."""
        return {"postfix": self.postfix_dir, "maps": self.maps_dir, "customize": self.customize_dir}

    def customize_main(self) -> Optional[Path]:
        """customize/postfix/main.cf when SmartPop may use it (see customize_state), else None."""
        usable, _ = customize_state(self.customize_dir, self.postfix_dir)
        return self.customize_dir / "main.cf" if usable else None

    @property
    def mechanism(self) -> str:
        """'customize' when the override main.cf is in use, else 'reapply' (the task after drift)."""
        return CUSTOMIZE if self.customize_main() is not None else REAPPLY


def default_maps_dir() -> Optional[str]:
    """MailPlus's package etc/smartpop when MailPlus's persistent etc exists, else None (no guessing)."""
    # Like the Postfix dir (never /etc/postfix by default): a password file root writes and
    # Postfix reads as root does not go to a guessed place on an unknown system.
    return MAPS_DIR if os.path.isdir(MAILPLUS_PKG_ETC) else None


def _trusted_owner(info: os.stat_result, postfix_dir: Path) -> bool:
    """Owned by root (or us) or by whoever owns the Postfix dir, and nobody else may rename in it."""
    try:
        postfix_owner = os.stat(postfix_dir).st_uid
    except OSError:
        postfix_owner = 0
    # The Postfix dir's owner controls main.cf already: trusting its dirs adds no exposure.
    owners = {0, os.geteuid(), postfix_owner}
    loose = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
    return info.st_uid in owners and not loose


def customize_state(customize_dir: Path, postfix_dir: Path) -> Tuple[bool, str]:
    """(usable, why) for MailPlus's customize override; usable only if its main.cf already exists."""
    # Only an existing main.cf is extended: whether MailPlus merges the file into main.cf or
    # replaces main.cf with it is UNCONFIRMED, and a file holding only SmartPop's block would
    # wipe MailPlus's settings in the second case.
    main = customize_dir / "main.cf"
    try:
        dir_info = os.lstat(customize_dir)
    except OSError:
        return False, f"{customize_dir} does not exist"
    if not stat.S_ISDIR(dir_info.st_mode):
        return False, f"{customize_dir} is not a directory (a symlink is not followed)"
    if not _trusted_owner(dir_info, postfix_dir):
        return False, f"{customize_dir} is writable by another user"
    try:
        info = os.lstat(main)
    except OSError:
        return False, f"{main} does not exist"
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        return False, f"{main} is not a plain file (a symlink or hard link is not used)"
    return True, f"{main} holds SmartPop's block; MailPlus re-applies it"


def check_maps_parent(parent: Path, postfix_dir: Path) -> Optional[str]:
    """Why the maps dir's parent cannot be trusted, or None when it can."""
    try:
        info = os.stat(parent)  # DSM's own symlinks (/var/packages/P/etc -> /volumeN/@appconf/P) are followed
    except OSError as exc:
        return f"{parent} is not accessible ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return f"{parent} is not a directory"
    if not _trusted_owner(info, postfix_dir):
        return f"{parent} is writable by a user other than root or the Postfix dir's owner"
    return None
