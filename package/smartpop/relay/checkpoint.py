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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

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
    # Only plain file names inside a known dir: never a path a manifest could redirect.
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise StateError(f"refusing unsafe file name in checkpoint: {name!r}")
    return name


def split_key(key: str) -> Tuple[str, str]:
    """A checkpoint key -> (area, file name): 'main.cf' is in the Postfix dir, 'maps/x' in the maps dir."""
    # Keys without an area are the Postfix dir's: checkpoints taken before the maps moved stay valid.
    area, sep, name = key.partition("/")
    if not sep:
        return "postfix", _safe_name(key)
    if area not in ("maps", "customize"):
        raise StateError(f"refusing unknown area in checkpoint: {key!r}")
    return area, _safe_name(name)


def locate(dirs: Mapping[str, Path], key: str) -> Optional[Path]:
    """Where the file of `key` lives, or None when its area has no directory."""
    area, name = split_key(key)
    base = dirs.get(area)
    return None if base is None else base / name


def _owner(info: os.stat_result) -> Dict[str, int]:
    return {"uid": info.st_uid, "gid": info.st_gid}


def take(store: Path, dirs: Mapping[str, Path], keys: Iterable[str], extra: Optional[Dict[str, object]] = None) -> None:
    """Copy the files of `keys` into `store` (replacing an older checkpoint there)."""
    if store.exists():
        shutil.rmtree(store)
    store.mkdir(mode=0o700, parents=True)
    files: Dict[str, Dict[str, object]] = {}
    for key in sorted(set(keys)):
        source = locate(dirs, key)
        try:
            if source is None:
                raise FileNotFoundError(key)
            data = source.read_bytes()
            info = source.stat()
        except FileNotFoundError:
            files[key] = {"present": False}
            continue
        (store / key).parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(store / key, data, 0o600)
        files[key] = {"present": True, "sha256": hashlib.sha256(data).hexdigest(), "mode": info.st_mode & 0o7777,
                      **_owner(info)}
    manifest = {"postfix_dir": str(dirs["postfix"]), "dirs": {area: str(path) for area, path in dirs.items()},
                "files": files, "extra": extra or {}}
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


def recorded_dirs(manifest: Dict[str, Any]) -> Dict[str, Path]:
    """The directories a checkpoint was taken from (only the Postfix dir for older checkpoints)."""
    raw = manifest.get("dirs") or {"postfix": manifest.get("postfix_dir")}
    return {str(area): Path(str(path)) for area, path in raw.items()
            if area in ("postfix", "maps", "customize") and path}


def names(manifest: Dict[str, Any]) -> List[str]:
    """File keys recorded in a manifest."""
    files = manifest["files"]
    assert isinstance(files, dict)
    for key in files:
        split_key(str(key))
    return [str(key) for key in files]


def restore(store: Path, manifest: Dict[str, Any], dirs: Mapping[str, Path]) -> None:
    """Put every recorded file back exactly (content, mode, owner); delete those that were absent."""
    files = manifest["files"]
    assert isinstance(files, dict)
    touched = set()
    for key, info in sorted(files.items()):
        target = locate(dirs, str(key))
        if target is None or not target.parent.is_dir():
            continue  # an area whose dir is gone (e.g. MailPlus removed customize/): nothing to put back into
        touched.add(target.parent)
        if not info.get("present"):
            if target.exists() or target.is_symlink():
                target.unlink()
            continue
        data = (store / key).read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise StateError(f"checkpoint copy of {key} is damaged (sha256 mismatch)")
        atomic_write(target, data, int(str(info.get("mode", 0o644))))
        if os.geteuid() == 0 and "uid" in info:
            os.chown(target, int(info["uid"]), int(info["gid"]))
    for directory in touched:
        fsync_dir(directory)


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
