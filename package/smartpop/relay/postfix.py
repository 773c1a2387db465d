"""Subprocess wrappers for the Postfix tools (argv lists only, no shell, with timeouts)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional

from smartpop.errors import TemporaryError, UsageError

MAILPLUS_SBIN = "/var/packages/MailPlus-Server/target/sbin"
MAILPLUS_ETC = "/var/packages/MailPlus-Server/target/etc"
TIMEOUT = 60.0
# A fixed, minimal environment: nothing from the caller leaks into the tools.
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
PREFERRED_MAP_TYPES = ("hash", "lmdb", "cdb", "btree", "texthash")


@dataclass
class Tools:
    """Absolute paths of postconf, postmap and postfix."""

    postconf: str
    postmap: str
    postfix: str


def locate(override_dir: Optional[str] = None) -> Tools:
    """Find the tools: override dir, else next to MailPlus's, else on the fixed PATH."""
    found: Dict[str, str] = {}
    for name in ("postconf", "postmap", "postfix"):
        candidates: List[str] = []
        if override_dir:
            candidates.append(os.path.join(override_dir, name))
        else:
            candidates.append(os.path.join(MAILPLUS_SBIN, name))
            which = shutil.which(name, path=_ENV["PATH"])
            if which:
                candidates.append(which)
        for candidate in candidates:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found[name] = candidate
                break
        else:
            raise UsageError(f"cannot find {name} (looked in {', '.join(candidates) or 'PATH'}); "
                             "pass --postfix-bin DIR")
    return Tools(**found)


def default_postfix_dir() -> Optional[str]:
    """MailPlus's Postfix config dir when present, else None (never the machine's own Postfix)."""
    # Falling back to /etc/postfix would let `relay apply` rewrite a developer's or another
    # mail server's configuration just because MailPlus is missing.
    return MAILPLUS_ETC if os.path.isfile(os.path.join(MAILPLUS_ETC, "main.cf")) else None


def run(argv: List[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; raise TemporaryError with its message when it fails or hangs."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              env=_ENV, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise TemporaryError(f"{os.path.basename(argv[0])} did not finish within {TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise TemporaryError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        raise TemporaryError(f"{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))} "
                             f"failed: {message[-1] if message else 'exit ' + str(proc.returncode)}")
    return proc


def parse_postconf(out: str) -> Dict[str, str]:
    """`name = value` lines of postconf's output as a dict (`name =` is an empty value)."""
    params: Dict[str, str] = {}
    for line in out.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            params[name.strip()] = value.strip()
        elif line.rstrip().endswith(" ="):
            params[line.rstrip()[:-2].strip()] = ""
    return params


def postconf_n(tools: Tools, postfix_dir: str) -> Dict[str, str]:
    """Non-default parameters as Postfix sees them (`postconf -c DIR -n`)."""
    return parse_postconf(run([tools.postconf, "-c", postfix_dir, "-n"]).stdout.decode("utf-8", "replace"))


def map_type(tools: Tools, postfix_dir: str) -> str:
    """A map type `postconf -m` lists, preferring indexed ones postmap builds."""
    # -c: without it postconf reads /etc/postfix/main.cf, which need not exist (MailPlus keeps its own).
    types = set(run([tools.postconf, "-c", postfix_dir, "-m"]).stdout.decode().split())
    for candidate in PREFERRED_MAP_TYPES:
        if candidate in types:
            return candidate
    raise TemporaryError("postconf -m lists none of " + ", ".join(PREFERRED_MAP_TYPES))


def postmap(tools: Tools, postfix_dir: str, table: str) -> None:
    """Build an indexed map (`postmap -c DIR type:path`); the secret stays in the file."""
    if table.startswith("texthash:"):
        return  # read directly, nothing to build
    run([tools.postmap, "-c", postfix_dir, table])


def check(tools: Tools, postfix_dir: str) -> None:
    """`postfix check`: raise TemporaryError if Postfix reports a problem."""
    run([tools.postfix, "-c", postfix_dir, "check"])


def is_running(tools: Tools, postfix_dir: str) -> bool:
    """Whether the Postfix instance of this config dir is running."""
    return run([tools.postfix, "-c", postfix_dir, "status"], check=False).returncode == 0


def reload(tools: Tools, postfix_dir: str) -> bool:
    """Reload a running instance; returns False when it is not running (nothing to reload)."""
    if not is_running(tools, postfix_dir):
        return False
    run([tools.postfix, "-c", postfix_dir, "reload"])
    return True
