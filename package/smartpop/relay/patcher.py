"""apply / verify / rollback / recover of the relay settings in one Postfix config dir.

Order of an apply: lock, recover a leftover transaction, validate, `postfix check`, take a
transaction checkpoint, atomic writes, postmap, `postfix check`, reload, commit. Any failure
or signal in between puts the transaction checkpoint back, so Postfix is never left half-done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Dict, Iterator, List, Optional, Tuple

from smartpop.errors import RollbackRequired, StateError
from smartpop.fsutil import atomic_write, locked
from smartpop.relay import checkpoint, maincf
from smartpop.relay import postfix as pf
from smartpop.relay.desired import MAP_NAMES, Desired, main_block_lines
from smartpop.relay.layout import CUSTOMIZE, Layout

MAIN_CF = "main.cf"
MASTER_CF = "master.cf"
# Checkpoint keys (checkpoint.split_key): a bare name is in the Postfix dir.
MAPS = "maps/"
CUSTOMIZE_MAIN = "customize/main.cf"
_INDEX_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "texthash": ""}


class Interrupted(BaseException):
    """A signal arrived during apply (BaseException: nothing may swallow it)."""


@dataclass
class Outcome:
    """What a command did, for the CLI and the status file."""

    changed: bool
    messages: List[str] = field(default_factory=list)


def _relay_paths(relay_dir: Path) -> Dict[str, Path]:
    return {"lock": relay_dir / "relay.lock", "txn": relay_dir / "txn", "base": relay_dir / "checkpoint",
            "status": relay_dir / "status.json"}


def touched_names(map_type: str, layout: Layout) -> List[str]:
    """Checkpoint keys of every file an apply may create, change or delete."""
    suffix = _INDEX_SUFFIX.get(map_type, ".db")
    result = [MAIN_CF, MASTER_CF]
    if layout.mechanism == CUSTOMIZE:
        result.append(CUSTOMIZE_MAIN)
    for name in MAP_NAMES:
        # Maps in the Postfix dir are the layout before 0.3: an apply removes them (migration).
        for key in (name, MAPS + name):
            result.append(key)
            if suffix:
                result.append(key + suffix)
    return result


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _with_block(path: Path, lines: List[str]) -> Tuple[bytes, bytes]:
    now = _read(path)
    return now, maincf.encode_bytes(maincf.with_block(maincf.decode(now), lines))


def planned_files(desired: Desired, layout: Layout) -> Dict[str, Optional[bytes]]:
    """New content per checkpoint key (None = delete); pure apart from reading the current files."""
    plan: Dict[str, Optional[bytes]] = {}
    postfix_dir = layout.postfix_dir
    main_now, main_new = _with_block(postfix_dir / MAIN_CF, main_block_lines(desired))
    if main_new != main_now:
        plan[MAIN_CF] = main_new
    customize = layout.customize_main()
    if customize is not None:
        # Same block in MailPlus's override, so a regenerated main.cf gets it back.
        now, new = _with_block(customize, main_block_lines(desired))
        if new != now:
            plan[CUSTOMIZE_MAIN] = new
    master_path = postfix_dir / MASTER_CF
    if master_path.exists():
        master_now, master_new = _with_block(master_path, desired.master_lines)
        if master_new != master_now:
            plan[MASTER_CF] = master_new
    elif desired.master_lines:
        raise StateError(f"{master_path} does not exist; cannot add the per-sender transports")
    for name in MAP_NAMES:
        path = layout.maps_dir / name
        content = desired.maps.get(name)
        if content is None:
            if path.exists():
                plan[MAPS + name] = None
        elif not path.exists() or path.read_bytes() != content.encode("utf-8"):
            plan[MAPS + name] = content.encode("utf-8")
        if (postfix_dir / name).exists():
            plan[name] = None  # SmartPop's map from the old layout, inside MailPlus's target/
    return plan


def _index_stale(desired: Desired, maps_dir: Path, map_type: str) -> List[str]:
    suffix = _INDEX_SUFFIX.get(map_type, ".db")
    stale = []
    for name in desired.maps:
        index = maps_dir / (name + suffix)
        if suffix and (not index.exists() or index.stat().st_mtime < (maps_dir / name).stat().st_mtime):
            stale.append(name)
    return stale


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP/SIGINT into Interrupted so the rollback path runs."""
    def handler(signum: int, frame: Optional[FrameType]) -> None:
        raise Interrupted(f"signal {signum}")
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def recover(relay_dir: Path, layout: Layout, tools: Optional[pf.Tools]) -> Optional[str]:
    """Put back a transaction an interrupted apply left behind; returns a message or None."""
    store = _relay_paths(relay_dir)["txn"]
    manifest = checkpoint.load(store)
    if manifest is not None or store.exists():
        _remove_temp_files(layout)
    if manifest is None:
        if store.exists():
            checkpoint.discard(store)  # incomplete: taken before any write happened
        return None
    checkpoint.restore(store, manifest, {**layout.dirs(), **checkpoint.recorded_dirs(manifest)})
    checkpoint.discard(store)
    if tools is not None:
        pf.reload(tools, str(layout.postfix_dir))
    return "recovered: an interrupted apply was rolled back to the files before it"


def _remove_temp_files(layout: Layout) -> None:
    """Delete the temp files of an atomic write that a killed apply left behind."""
    # atomic_write names them '.<name>.<random>.tmp'; only our own file names are considered.
    for directory in layout.dirs().values():
        if not directory.is_dir():
            continue
        for name in [MAIN_CF, MASTER_CF, *MAP_NAMES]:
            for leftover in directory.glob(f".{name}.*.tmp"):
                if leftover.is_file() and not leftover.is_symlink():
                    leftover.unlink()


def write_status(relay_dir: Path, state: str, detail: str, fingerprint: Optional[str], postfix_dir: Path,
                 extra: Optional[Dict[str, str]] = None) -> None:
    """Leave the outcome for the unprivileged side (status, UI); no secrets in it."""
    data: Dict[str, Any] = {"state": state, "detail": detail, "fingerprint": fingerprint,
                            "postfix_dir": str(postfix_dir), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # map_type, ca_file and maps_dir let the unprivileged status compute the same fingerprint.
    data.update(extra or {})
    atomic_write(_relay_paths(relay_dir)["status"], json.dumps(data, indent=1).encode(), 0o644)


def _write(path: Path, content: bytes, secret: bool) -> None:
    """Atomic write; maps get 0600, a config file keeps its mode and owner."""
    try:
        info: Optional[os.stat_result] = path.stat()
    except FileNotFoundError:
        info = None
    atomic_write(path, content, 0o600 if secret else (info.st_mode & 0o7777 if info else 0o644))
    if info is not None and not secret and os.geteuid() == 0 and (info.st_uid, info.st_gid) != (0, 0):
        os.chown(path, info.st_uid, info.st_gid)  # MailPlus may own its files; leave them its own


def _delete(path: Path) -> None:
    path.unlink()
    for suffix in set(_INDEX_SUFFIX.values()) - {""}:
        index = path.with_name(path.name + suffix)
        if index.exists():
            index.unlink()


def apply(relay_dir: Path, layout: Layout, tools: pf.Tools, desired: Desired, map_type: str,
          hook: Optional[Any] = None) -> Outcome:
    """Make the Postfix dir, the maps dir (and the customize override) match `desired`; roll back on failure."""
    relay_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = _relay_paths(relay_dir)
    postfix_dir, dirs = layout.postfix_dir, layout.dirs()
    outcome = Outcome(changed=False)
    with locked(paths["lock"], timeout=30):
        message = recover(relay_dir, layout, tools)
        if message:
            outcome.messages.append(message)
        plan = planned_files(desired, layout)
        stale = _index_stale(desired, layout.maps_dir, map_type)
        if not plan and not stale:
            outcome.messages.append("nothing to change: the relay settings are in place")
            return outcome
        pf.check(tools, str(postfix_dir))
        names = touched_names(map_type, layout)
        checkpoint.take(paths["txn"], dirs, names)
        try:
            with _signals_raise():
                for key, content in sorted(plan.items()):
                    target = checkpoint.locate(dirs, key)
                    assert target is not None
                    if content is None:
                        _delete(target)
                    else:
                        _write(target, content, secret=key.startswith(MAPS))
                    if hook:
                        hook(key)
                for name in desired.maps:
                    pf.postmap(tools, str(postfix_dir), f"{map_type}:{layout.maps_dir / name}")
                    index = layout.maps_dir / (name + _INDEX_SUFFIX.get(map_type, ".db"))
                    if index.exists():
                        index.chmod(0o600)
                pf.check(tools, str(postfix_dir))
                pf.reload(tools, str(postfix_dir))
                _commit(paths, dirs, names)
        except BaseException as exc:
            manifest = checkpoint.load(paths["txn"])
            if manifest is not None:
                _remove_temp_files(layout)
                checkpoint.restore(paths["txn"], manifest, dirs)
                checkpoint.discard(paths["txn"])
                with contextlib.suppress(OSError):
                    layout.maps_dir.rmdir()  # only when empty: as before this apply
                with contextlib.suppress(Exception):  # the restore succeeded; report the first cause
                    pf.reload(tools, str(postfix_dir))
            raise RollbackRequired(f"apply failed and was rolled back: {exc}") from exc
        checkpoint.discard(paths["txn"])
        outcome.changed = True
        outcome.messages.append("applied: " + ", ".join(sorted(plan) or ["map indexes"]))
    return outcome


def _commit(paths: Dict[str, Path], dirs: Dict[str, Path], names: List[str]) -> None:
    """Record the pre-SmartPop originals and what we wrote, for rollback and drift checks."""
    txn = checkpoint.load(paths["txn"])
    assert txn is not None
    base = checkpoint.load(paths["base"])
    applied = {}
    for key in names:
        where = checkpoint.locate(dirs, key)
        applied[key] = checkpoint.sha256_file(where) if where is not None else None
    if base is None:
        # First apply: the transaction's copies are the pre-SmartPop originals.
        _copy_checkpoint(paths["txn"], paths["base"], txn, applied)
        return
    # Keep the first originals, except for files that changed under us (MailPlus regenerated
    # them): then the regenerated version, without our block, is what a rollback restores.
    # Keys new to this apply (the maps dir after an upgrade from the old layout, the customize
    # file) take the transaction's copy, which is the state before SmartPop touched them.
    before = base.get("extra", {}).get("applied", {})
    merged_files = dict(base["files"])
    for name, info in txn["files"].items():
        if info.get("sha256") != before.get(name) or name not in merged_files:
            merged_files[name] = dict(info, source="txn")
    _rewrite_base(paths, txn, merged_files, applied)


def _copy_checkpoint(txn_dir: Path, base_dir: Path, txn: Dict[str, Any], applied: Dict[str, Optional[str]]) -> None:
    files = {name: dict(info, source="txn") for name, info in txn["files"].items()}
    _rewrite_base({"txn": txn_dir, "base": base_dir}, txn, files, applied)


def _rewrite_base(paths: Dict[str, Path], txn: Dict[str, Any], files: Dict[str, Any],
                  applied: Dict[str, Optional[str]]) -> None:
    staging = paths["base"].with_name("checkpoint.new")
    if staging.exists():
        checkpoint.discard(staging)
    staging.mkdir(mode=0o700)
    clean: Dict[str, Any] = {}
    for name, recorded in files.items():
        info = dict(recorded)
        source = paths["txn"] if info.pop("source", None) == "txn" else paths["base"]
        if info.get("present"):
            (staging / name).parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write(staging / name, (source / name).read_bytes(), 0o600)
        clean[name] = info
    manifest = {"postfix_dir": txn.get("postfix_dir"), "dirs": txn.get("dirs"), "files": clean,
                "extra": {"applied": applied}}
    atomic_write(staging / checkpoint.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), 0o600)
    if paths["base"].exists():
        checkpoint.discard(paths["base"])
    staging.rename(paths["base"])


def changed_since_apply(relay_dir: Path, layout: Layout) -> List[str]:
    """Files whose bytes differ from what the last apply left (drift); [] if no checkpoint."""
    base = checkpoint.load(_relay_paths(relay_dir)["base"])
    if base is None:
        return []
    applied = base.get("extra", {}).get("applied", {})
    dirs = layout.dirs()
    changed = []
    for key, digest in applied.items():
        where = checkpoint.locate(dirs, key)
        if where is not None and checkpoint.sha256_file(where) != digest:
            changed.append(key)
    return sorted(changed)


def rollback(relay_dir: Path, layout: Layout, tools: pf.Tools, force: bool = False) -> Outcome:
    """Restore every touched file byte-identical to before the first apply, then reload."""
    paths = _relay_paths(relay_dir)
    relay_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    outcome = Outcome(changed=False)
    with locked(paths["lock"], timeout=30):
        try:
            _rollback_locked(paths, relay_dir, layout, tools, force, outcome)
        finally:
            with contextlib.suppress(OSError):
                layout.maps_dir.rmdir()  # SmartPop's own dir, when empty; a non-empty one stays
    return outcome


def _rollback_locked(paths: Dict[str, Path], relay_dir: Path, layout: Layout, tools: pf.Tools, force: bool,
                     outcome: Outcome) -> None:
    message = recover(relay_dir, layout, tools)
    if message:
        outcome.messages.append(message)
    base = checkpoint.load(paths["base"])
    if base is None:
        outcome.messages.append("nothing to roll back: no SmartPop checkpoint")
        return
    drifted = changed_since_apply(relay_dir, layout)
    if drifted and not force:
        raise StateError("refusing to roll back: " + ", ".join(drifted) + " changed since SmartPop applied "
                         "its settings (MailPlus may have rewritten them); restoring would discard those "
                         "changes. Run `smartpop relay apply` then rollback, or pass --force")
    checkpoint.restore(paths["base"], base, layout.dirs())
    checkpoint.discard(paths["base"])
    pf.reload(tools, str(layout.postfix_dir))
    outcome.changed = True
    outcome.messages.append("rolled back: " + ", ".join(checkpoint.names(base)))


def verify(layout: Layout, tools: pf.Tools, desired: Desired) -> List[str]:
    """Differences between the live config and the desired one ([] = in place)."""
    postfix_dir = layout.postfix_dir
    live = pf.postconf_n(tools, str(postfix_dir))
    problems = [f"{name}: live {live.get(name)!r}, want {value!r}"
                for name, value in sorted(desired.params.items()) if live.get(name) != value]
    main_files = [(MAIN_CF, postfix_dir / MAIN_CF)]
    customize = layout.customize_main()
    if customize is not None:
        main_files.append((str(customize), customize))
    for shown, path in main_files:
        main_text = maincf.decode(_read(path))
        if not desired.params and maincf.split_blocks(main_text)[1]:
            problems.append(f"{shown} still has a SmartPop block although the relay is disabled")
        if maincf.block_body(main_text) != main_block_lines(desired):
            if desired.params:
                problems.append(f"{shown}: the SmartPop block is missing or differs")
    for name, content in desired.maps.items():
        if _read(layout.maps_dir / name) != content.encode("utf-8"):
            problems.append(f"{layout.maps_dir / name}: missing or different")
    for name in MAP_NAMES:
        if (postfix_dir / name).exists():
            problems.append(f"{postfix_dir / name}: left from the old layout (maps now live in {layout.maps_dir})")
    master = maincf.decode(_read(postfix_dir / MASTER_CF))
    if maincf.block_body(master) != desired.master_lines:
        problems.append("master.cf: the SmartPop transports are missing or differ")
    return problems
