"""Reading and writing DATA/config.json: lock, migrate, validate, atomic 0600 write."""

from __future__ import annotations

import json
import logging
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
