"""The doctor's observations: read-only looks at files, owners and MailPlus's postconf.

Every probe returns plain data and never raises; a failure becomes an "error" text. Nothing here
writes, locks or creates anything (the doctor may run as root on the package user's DATA), and
nothing secret is read: config.json is parsed for its shape only, web.secret is never opened.
"""

from __future__ import annotations

import json
import os
import pwd
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from smartpop import __version__
from smartpop.doctor.postconf import POSTCONF_PARAMS
from smartpop.paths import OWN_DIRS, OWN_FILES, Paths
from smartpop.relay.postfix import parse_postconf

DSM_VERSION = "etc.defaults/VERSION"
MAILPLUS = "var/packages/MailPlus-Server"
CUSTOMIZE = MAILPLUS + "/etc/customize/postfix"
DSM_CGIS = {"authenticate.cgi": "usr/syno/synoman/webman/modules/authenticate.cgi",
            "login.cgi": "usr/syno/synoman/webman/login.cgi"}
SYSTEM_PYTHON = "/usr/bin/python3"
# Written by ui/index.cgi (the package user's CGI); only these fields are ever shown.
CGI_RECORD = "cgi-auth.json"
CGI_FIELDS = ("time", "user", "token", "result")
MAX_READ = 64 * 1024
TIMEOUT = 20.0


def _user(uid: Optional[int]) -> Optional[str]:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _read(path: Path) -> Optional[str]:
    """A small text file, not following a final symlink; None when absent or unreadable."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(MAX_READ).decode("utf-8", "replace")


def _owner_mode(path: Path, follow: bool = False) -> Dict[str, Any]:
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        return {"path": str(path), "exists": False, "error": exc.strerror}
    return {"path": str(path), "exists": True, "user": _user(info.st_uid), "uid": info.st_uid,
            "mode": f"{stat.S_IMODE(info.st_mode):04o}", "is_dir": stat.S_ISDIR(info.st_mode)}


def _run(argv: List[str]) -> Optional[str]:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, check=False,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def system_python(path: str = SYSTEM_PYTHON) -> Dict[str, Any]:
    """Version and owner of the interpreter the root task runs."""
    out = _run([path, "-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    info = _owner_mode(Path(path), follow=True)
    return {"path": path, "version": out.strip() if out else None, "uid": info.get("uid")}


def service(paths: Paths) -> Dict[str, Any]:
    """The running `smartpop serve` (pid file + /proc) and its user, if it runs."""
    text = _read(paths.pid_file) or ""
    pid = text.strip().splitlines()[0] if text.strip() else ""
    if not pid.isdigit():
        return {}
    cmdline = _read(Path(f"/proc/{pid}/cmdline")) or ""
    if "smartpop" not in cmdline:
        return {}
    uid = None
    for line in (_read(Path(f"/proc/{pid}/status")) or "").splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[2])  # effective uid
    return {"pid": int(pid), "user": _user(uid)}


def cgi_record(paths: Paths) -> Dict[str, Any]:
    """How the DSM CGI last authenticated a request (written by ui/index.cgi; whitelisted fields only)."""
    try:
        data = json.loads(_read(paths.data / CGI_RECORD) or "{}")
    except ValueError:
        return {}
    return {key: str(data[key]) for key in CGI_FIELDS if isinstance(data, dict) and key in data}


def data_files(paths: Paths) -> List[Dict[str, Any]]:
    """Owner and mode of every file SmartPop keeps at the top of DATA."""
    found = []
    for name in OWN_FILES + OWN_DIRS + ("relay", "relay/state", CGI_RECORD):
        entry = _owner_mode(paths.data / name)
        if entry["exists"]:
            found.append({"name": name, "user": entry["user"], "mode": entry["mode"]})
    return found


def _tool(bin_dir: Optional[str]) -> Optional[str]:
    from smartpop.errors import SmartPopError
    from smartpop.relay.postfix import locate

    try:
        return locate(bin_dir).postconf
    except SmartPopError:
        return None


def postconf(directory: str, bin_dir: Optional[str] = None) -> Dict[str, Any]:
    """Effective parameters, master.cf services and their -o overrides, as MailPlus's postconf reports them."""
    tool = _tool(bin_dir)
    if tool is None:
        return {"error": "postconf not found"}
    out = _run([tool, "-c", directory, "-x", *POSTCONF_PARAMS]) or _run([tool, "-c", directory, *POSTCONF_PARAMS])
    if out is None:
        return {"error": f"{tool} -c {directory} failed"}
    params = parse_postconf(out)
    master = [line.split(None, 7) for line in (_run([tool, "-c", directory, "-M"]) or "").splitlines() if line.strip()]
    services: Dict[str, Dict[str, str]] = {}
    for line in (_run([tool, "-c", directory, "-P"]) or "").splitlines():
        # "smtp/inet/smtpd_milters = inet:…", or "smtp/inet/smtpd_milters =" for an empty override
        key, sep, value = line.partition("=")
        parts = key.strip().rsplit("/", 1)
        if sep and len(parts) == 2:
            services.setdefault(parts[0], {})[parts[1]] = value.strip()
    return {"tool": tool, "params": params, "master": [fields for fields in master if len(fields) == 8],
            "services": services}


def ca_bundle() -> Dict[str, Any]:
    """The CA file the relay would use and how many CAs Python's default context loads."""
    from smartpop.errors import SmartPopError
    from smartpop.relay.trust import find_ca_file

    try:
        found = find_ca_file()
    except SmartPopError as exc:
        return {"error": str(exc)}
    try:
        count = ssl.create_default_context().cert_store_stats().get("x509_ca", 0)
    except (ssl.SSLError, OSError):
        count = 0
    return {"file": found, "count": count}


def config_and_relay(paths: Paths) -> Dict[str, Any]:
    """config.json's validity and shape (read-only, never migrated) and the relay root task's state."""
    from smartpop.config.store import load_untrusted
    from smartpop.errors import SmartPopError
    from smartpop.relay import service as relay_service
    from smartpop.relay.roottask import task_state

    try:
        config = load_untrusted(paths)
    except SmartPopError as exc:
        relay: Dict[str, Any] = dict(task_state(relay_service._read_status(paths)))
        return {"config": {"ok": False, "error": str(exc)}, "relay": relay, "delivery": {}}
    try:
        relay = dict(relay_service.relay_status(paths, config))
    except (SmartPopError, OSError) as exc:
        relay = {"error": str(exc)}
    relay.pop("task_command", None)  # long, and the Relay page shows it
    relay["enabled"] = config.relay.enabled
    return {"config": {"ok": True, "accounts": len(config.accounts)},
            "relay": relay, "delivery": {"host": config.delivery.host, "port": config.delivery.port}}


def collect(paths: Paths, root: Path = Path("/"), postfix_dir: Optional[str] = None,
            postfix_bin: Optional[str] = None) -> Dict[str, Any]:
    """Every observation the facts need; `root` lets tests stand in a fake DSM file tree."""
    on_dsm = (root / DSM_VERSION).is_file()
    directory = postfix_dir
    if directory is None and on_dsm:
        directory = str(root / MAILPLUS / "target/etc")
    customize = root / CUSTOMIZE
    snap: Dict[str, Any] = {
        "smartpop_version": __version__,
        "on_dsm": on_dsm,
        "dsm_version_file": _read(root / DSM_VERSION),
        "mailplus_info": _read(root / MAILPLUS / "INFO"),
        "python": {"executable": sys.executable, "version": ".".join(map(str, sys.version_info[:3]))},
        "system_python": system_python(),
        "process": {"user": _user(os.geteuid())},
        "service": service(paths),
        "cgi": cgi_record(paths),
        "target": _owner_mode(Path(__file__).resolve().parent.parent.parent, follow=True),
        "data": _owner_mode(Path(os.path.abspath(str(paths.data))), follow=True),
        "data_files": data_files(paths),
        "customize": {"path": str(customize), "exists": customize.is_dir(),
                      "files": {name: (customize / name).is_file() for name in ("main.cf", "master.cf")}},
        "dsm_cgis": {name: (root / path).is_file() for name, path in DSM_CGIS.items()},
        "ca": ca_bundle(),
    }
    snap["postfix"] = {"dir": directory}
    for name in ("main.cf", "master.cf"):
        snap["postfix"][name] = directory is not None and Path(directory, name).is_file()
    snap["postconf"] = postconf(directory, postfix_bin) if directory else {}
    snap.update(config_and_relay(paths))
    return snap
