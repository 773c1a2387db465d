"""Reading and writing DATA/config.json: lock, migrate, validate, atomic 0600 write."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable, Optional

from smartpop import fsutil
from smartpop.config import validators as v
from smartpop.config.migrate import migrate
from smartpop.config.schema import Config, parse_config, render_config
from smartpop.errors import ConfigError
from smartpop.paths import Paths

log = logging.getLogger(__name__)


def _lock_path(paths: Paths) -> Path:
    return paths.data / "config.json.lock"


def read_document(path: Path) -> Any:
    """Parse config.json as JSON, turning I/O and syntax problems into ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise v.fail("config", f"{path} does not exist",
                     "install the package through the wizard, or write the file (see docs/CONFIG.md)") from None
    except OSError as exc:
        raise v.fail("config", f"cannot read {path}: {exc.strerror}", "check the file's owner and mode") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise v.fail("config", f"{path} is not valid JSON ({exc})", "correct the JSON syntax at that position") from exc


MAX_CONFIG_BYTES = 1024 * 1024


def load_untrusted(paths: Paths) -> Config:
    """Load config.json for root's task: no lock, no write, no symlink, bounded size.

    DATA belongs to the package user; root must not create files there (a root-owned lock
    would lock the package out) nor follow a link the package user planted.
    """
    try:
        fd = os.open(str(paths.config), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise v.fail("config", f"{paths.config} does not exist", "set up SmartPop in its app first") from None
    except OSError as exc:
        raise v.fail("config", f"cannot open {paths.config} safely: {exc.strerror}",
                     "config.json must be a regular file, not a symlink") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise v.fail("config", f"{paths.config} is not a regular file", "remove it and save the settings again")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise v.fail("config", f"{paths.config} is larger than {MAX_CONFIG_BYTES} bytes", "save the settings again")
    try:
        raw = json.loads(data.decode("utf-8"))
    except ValueError:
        # No excerpt of the content: root may have been pointed at something that is not ours.
        raise v.fail("config", f"{paths.config} is not valid JSON", "save the settings again in the app") from None
    document, _ = migrate(raw)
    return parse_config(document)


def serialise(config: Config) -> bytes:
    """Render a Config as the bytes of config.json."""
    return (json.dumps(render_config(config), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def load(paths: Paths) -> Config:
    """Load, migrate (persisting the migration) and validate config.json."""
    with fsutil.locked(_lock_path(paths)):
        raw = read_document(paths.config)
        document, changed = migrate(raw)
        config = parse_config(document)
        if changed:
            backup = paths.config.with_name("config.json.pre-migration")
            fsutil.atomic_write(backup, paths.config.read_bytes())
            fsutil.atomic_write(paths.config, serialise(config))
            log.info("config.json migrated; the old file is kept as %s", backup.name)
    return config


def save(paths: Paths, config: Config) -> None:
    """Validate and atomically write `config` (mode 0600)."""
    data = serialise(config)
    # Re-parse what we are about to write, so an invalid Config never reaches disk.
    parse_config(json.loads(data.decode("utf-8")))
    paths.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    with fsutil.locked(_lock_path(paths)):
        fsutil.atomic_write(paths.config, data, mode=0o600)


def save_document(paths: Paths, document: Any) -> Config:
    """Validate a raw document (e.g. from the wizard or UI) and write it."""
    migrated, _ = migrate(document)
    config = parse_config(migrated)
    save(paths, config)
    return config


def update(paths: Paths, change: Callable[[Config], Optional[Config]]) -> Config:
    """Read-modify-write under the config lock; `change` edits in place or returns a new Config."""
    with fsutil.locked(_lock_path(paths)):
        document, _ = migrate(read_document(paths.config))
        config = parse_config(document)
        result = change(config) or config
        data = serialise(result)
        try:
            parse_config(json.loads(data.decode("utf-8")))
        except ConfigError:
            log.warning("config change rejected by validation")
            raise
        fsutil.atomic_write(paths.config, data, mode=0o600)
    return result
