"""Checkpoints of Postfix files: copies plus sha256, written durably, restored byte-identical.

A checkpoint is complete only once its manifest exists (written last, atomically), so a crash
while taking one leaves nothing that could be mistaken for a valid checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from smartpop.errors import StateError
from smartpop.fsutil import atomic_write, fsync_dir

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> Optional[str]:
    """sha256 of a file's bytes, or None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _safe_name(name: str) -> str:
    # Only plain file names inside the Postfix dir: never a path a manifest could redirect.
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise StateError(f"refusing unsafe file name in checkpoint: {name!r}")
    return name


def take(store: Path, postfix_dir: Path, names: Iterable[str], extra: Optional[Dict[str, object]] = None) -> None:
    """Copy `names` from postfix_dir into `store` (replacing an older checkpoint there)."""
    if store.exists():
        shutil.rmtree(store)
    store.mkdir(mode=0o700, parents=True)
    files: Dict[str, Dict[str, object]] = {}
    for name in sorted(set(names)):
        source = postfix_dir / _safe_name(name)
        try:
            data = source.read_bytes()
            mode = source.stat().st_mode & 0o7777
        except FileNotFoundError:
            files[name] = {"present": False}
            continue
        atomic_write(store / name, data, 0o600)
        files[name] = {"present": True, "sha256": hashlib.sha256(data).hexdigest(), "mode": mode}
    manifest = {"postfix_dir": str(postfix_dir), "files": files, "extra": extra or {}}
    atomic_write(store / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), 0o600)


def load(store: Path) -> Optional[Dict[str, Any]]:
    """The manifest of a complete checkpoint, or None."""
    try:
        data = json.loads((store / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"checkpoint {store} is unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise StateError(f"checkpoint {store} has no file list")
    return data


def names(manifest: Dict[str, Any]) -> List[str]:
    """File names recorded in a manifest."""
    files = manifest["files"]
    assert isinstance(files, dict)
    return [_safe_name(str(name)) for name in files]


def restore(store: Path, manifest: Dict[str, Any], postfix_dir: Path) -> None:
    """Put every recorded file back exactly (content and mode); delete those that were absent."""
    files = manifest["files"]
    assert isinstance(files, dict)
    for name, info in sorted(files.items()):
        target = postfix_dir / _safe_name(str(name))
        if not info.get("present"):
            if target.exists() or target.is_symlink():
                target.unlink()
            continue
        data = (store / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise StateError(f"checkpoint copy of {name} is damaged (sha256 mismatch)")
        atomic_write(target, data, int(str(info.get("mode", 0o644))))
    fsync_dir(postfix_dir)


def discard(store: Path) -> None:
    """Remove a checkpoint: manifest first, so a crash never leaves a half-valid one."""
    manifest = store / MANIFEST
    if manifest.exists():
        manifest.unlink()
        fsync_dir(store)
    if store.exists():
        shutil.rmtree(store)


def exists(store: Path) -> bool:
    """Whether a complete checkpoint is stored there."""
    return os.path.isfile(store / MANIFEST)
