"""The runtime head of SmartPop's relay bundle (bin/smartpop-relay.py); not shipped on its own.

tools/relay_bundle.py appends nothing and replaces one line: the FILES literal below becomes
the sources of the modules the root relay task needs. The result runs only through the
bootstrap of the Task Scheduler command (smartpop/relay/roottask.py), which has already checked
the bundle's SHA-256 against the hash in that command, and which executes exactly the bytes it
checked. So this code imports nothing from disk but the standard library: every SmartPop and
bundled-library module comes from FILES, held in memory, never from the package user's files.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Dict, List, Optional, Sequence

FILES: Dict[str, str] = {}  # replaced by tools/relay_bundle.py
ORIGIN = "<smartpop-relay-bundle>"
# Top-level names the bundle provides; anything else must come from the standard library.
ROOTS = ("smartpop", "filelock")


class BundleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serve modules from FILES (in memory): no path, no bytecode cache, nothing on disk."""

    def __init__(self, files: Dict[str, str]) -> None:
        self.files = files

    def _source_name(self, fullname: str) -> Optional[str]:
        base = fullname.replace(".", "/")
        for candidate in (base + "/__init__.py", base + ".py"):
            if candidate in self.files:
                return candidate
        return None

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        """A spec for bundled modules; for other names under our roots, refuse rather than fall through."""
        if fullname.split(".")[0] not in ROOTS:
            return None
        name = self._source_name(fullname)
        if name is None:
            # Never let another finder look on disk for a name the bundle owns.
            raise ModuleNotFoundError(f"{fullname} is not in the relay bundle", name=fullname)
        spec = importlib.util.spec_from_loader(fullname, self, origin=f"{ORIGIN}/{name}",
                                               is_package=name.endswith("/__init__.py"))
        if spec is not None and spec.submodule_search_locations is not None:
            spec.submodule_search_locations[:] = [f"{ORIGIN}/{name.rpartition('/')[0]}"]
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        """Default module creation."""
        return None

    def exec_module(self, module: ModuleType) -> None:
        """Compile the module's source from memory and run it in the module's namespace."""
        name = self._source_name(module.__name__)
        assert name is not None
        module.__file__ = f"{ORIGIN}/{name}"
        code = compile(self.files[name], module.__file__, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - verified bundle source, the point of this loader


def install(files: Dict[str, str]) -> None:
    """Put the bundle first on sys.meta_path and forget anything imported from elsewhere."""
    sys.dont_write_bytecode = True
    for loaded in list(sys.modules):
        if loaded.split(".")[0] in ROOTS:
            del sys.modules[loaded]
    sys.meta_path.insert(0, BundleFinder(files))


def main(argv: List[str]) -> int:
    """argv: [bundle path, verified sha256, --data DIR, relay, ACTION, options...]."""
    install(FILES)
    from smartpop import cli
    from smartpop.relay import roottask

    bundle_path, sha256, rest = argv[0], argv[1], argv[2:]
    # cli.main refuses every command but `relay` once the run is marked as the verified bundle.
    roottask.mark_verified(bundle_path, sha256)
    return cli.main(rest)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
