"""Running the backend under waitress, with a clean stop on SIGTERM.

In production the backend listens on a Unix socket in a private directory of the data dir
(DATA/run/web.sock, directory 0700, socket 0600), never on a TCP port: any local account can
bind a free loopback port first (at boot, upgrade or restart) and would then receive the CGI's
secret, the admin's name and every form body. Only the package user can create files in
DATA/run, and ui/index.cgi checks owner and type before it sends anything. `serve --dev` keeps
the 127.0.0.1 TCP port of `web.port` for trying the app in a browser without DSM.

The admin opens the UI rarely, while the collector runs all day in the same process: waitress
gets a LazyApp, which imports Flask and builds the app on the first request. Nothing of
Flask, Jinja or Werkzeug is in memory before then (about 9 MB of RSS under Python 3.8).
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import secrets
import signal
import socket
import stat
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Optional

from waitress.server import create_server

from smartpop.config.schema import Config
from smartpop.errors import ConfigError, SmartPopError
from smartpop.paths import Paths
from smartpop.web.proof import load_or_create_secret

if TYPE_CHECKING:
    from smartpop.collector.concurrency import Guards
    from smartpop.collector.daemon import DaemonHandle

log = logging.getLogger(__name__)

# waitress 3.0.0 (the last release for Python 3.8) has known request-smuggling CVEs, so it
# must never listen on anything but loopback (dev mode) or the private socket below.
BIND_HOST = "127.0.0.1"
# ui/index.cgi has the same two names (it is stdlib-only and cannot import this module).
SOCKET_DIR = "run"
SOCKET_NAME = "web.sock"
# One admin: the slow requests (an account's test login, a relay test mail, a test alert, the
# doctor page's probes) each end within their timeouts (15-30 s), and "fetch now" runs in a
# thread of its own (web/jobs.py). Two workers leave one for pages and polls while one such
# request waits on a server; further requests queue in waitress, none is refused. Each
# worker is a thread for the whole life of `serve`, which mostly runs the collector.
THREADS = 2
# waitress's main loop wakes after this many seconds without traffic (its default is 1 s: a
# tick every second all day). Requests and replies wake it at once anyway; only the cleanup
# of connections idle for over channel_timeout waits for the next wake.
LOOP_TIMEOUT = 600
# What the Flask app needs beyond waitress: checked (not imported) at start, so that a broken
# installation still stops `serve` at once instead of at the admin's first click.
WEB_LIBRARIES = ("flask", "jinja2", "werkzeug")

WsgiApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def socket_path(paths: Paths) -> Path:
    """Where the production backend listens: DATA/run/web.sock."""
    return paths.data / SOCKET_DIR / SOCKET_NAME


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path}: {why}; remove it and start SmartPop again", key="web")


def prepare_socket(paths: Paths) -> Path:
    """Make DATA/run private (0700, ours) and clear a stale socket of ours; refuse anything else."""
    uid = os.geteuid()
    data_info = os.stat(paths.data)
    if data_info.st_uid == uid and data_info.st_mode & 0o022:
        # index.cgi refuses a data dir that others may write to (they could swap DATA/run).
        os.chmod(paths.data, stat.S_IMODE(data_info.st_mode) & ~0o022)
    directory = paths.data / SOCKET_DIR
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise _refuse(directory, "is not a directory owned by the SmartPop user")
    os.chmod(directory, 0o700)
    path = directory / SOCKET_NAME
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != uid:
        raise _refuse(path, "is not a socket of the SmartPop user")
    if _answers(path):
        raise ConfigError(f"{path}: another SmartPop backend is already listening there; stop it first",
                          key="web")
    path.unlink()
    return path


def _answers(path: Path) -> bool:
    """Whether a process listens on the Unix socket `path` (a crashed run leaves a dead one)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def _port_taken(port: int, exc: OSError) -> ConfigError:
    return ConfigError(f"web.port: {BIND_HOST}:{port} is already in use ({exc.strerror}). Fix: stop the program "
                       "that listens there, or set web.port in config.json to a free port (1025-65535)",
                       key="web.port")


def ensure_can_listen(paths: Paths, port: Optional[int] = None) -> None:
    """Fail early, with one line, when the socket (or the dev port) is taken: before the collector starts."""
    if port is None:
        prepare_socket(paths)
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Same option as waitress, so a port in TIME_WAIT after our own restart does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((BIND_HOST, port))
    except OSError as exc:
        raise _port_taken(port, exc) from None
    finally:
        probe.close()


def make_server(app: Any, paths: Paths, port: Optional[int] = None) -> Any:
    """A waitress server on the private socket, or (dev mode, `port` given) on 127.0.0.1:port."""
    if port is not None:
        try:
            return create_server(app, host=BIND_HOST, port=port, threads=THREADS, ident="SmartPop",
                                 asyncore_loop_timeout=LOOP_TIMEOUT)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise _port_taken(port, exc) from None
    path = prepare_socket(paths)
    return create_server(app, unix_socket=str(path), unix_socket_perms="600", threads=THREADS,
                         asyncore_loop_timeout=LOOP_TIMEOUT,
                         ident="SmartPop")


class LazyApp:
    """The WSGI callable waitress serves: builds the real app on the first request, once."""

    def __init__(self, build: Callable[[], WsgiApp]) -> None:
        self._build = build
        self._app: Optional[WsgiApp] = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the real app has been built."""
        return self._app is not None

    def load(self) -> WsgiApp:
        """The real app, built by the first caller while concurrent first requests wait for it."""
        app = self._app
        if app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._build()
                app = self._app
        return app

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            app = self.load()
        except Exception:
            # Nothing is kept: the next request builds again (a file fixed, a library restored).
            log.exception("the web interface could not be started (%s %s answered with 500; the next request "
                          "tries again)", environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                         ("X-Content-Type-Options", "nosniff"),
                                                         ("Cache-Control", "no-store")])
            return [b"SmartPop: the web interface could not be started; the log (smartpop.log) says why\n"]
        return app(environ, start_response)


def require_web_libraries() -> None:
    """Fail at start, with one line, when a library of the web app is missing (without importing it)."""
    missing = [name for name in WEB_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        raise SmartPopError(f"the web interface's libraries are missing ({', '.join(missing)}). Fix: reinstall "
                            "SmartPop")


def lazy_app(paths: Paths, dev_token: Optional[str] = None, guards: Optional[Guards] = None) -> LazyApp:
    """The app of `serve`: its secret exists from the start (index.cgi reads it), the rest comes on use."""
    secret = load_or_create_secret(paths)

    def build() -> WsgiApp:
        from smartpop.web.app import create_app

        app = create_app(paths, secret=secret, dev_token=dev_token, guards=guards)
        log.info("web interface loaded")
        return app

    return LazyApp(build)


def serve(paths: Paths, config: Config, dev: bool = False, collector: Optional[DaemonHandle] = None) -> None:
    """Serve the web backend until SIGTERM or SIGINT; `dev` adds a printed one-time login token.

    With `collector` (the daemon's handle) the alert watcher checks after each run that changed
    an account's status, instead of on a timer.
    """
    dev_token = secrets.token_urlsafe(24) if dev else None
    app = lazy_app(paths, dev_token=dev_token, guards=collector.guards if collector is not None else None)
    server = make_server(app, paths, port=config.web.port if dev else None)

    from smartpop.alerts import AlertWatcher

    watcher = AlertWatcher(paths).start()
    if collector is not None:
        collector.on_change = watcher.poke

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        log.info("signal %d received, stopping", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if dev_token:
        log.info("SmartPop backend (dev mode) listening on http://%s:%d", BIND_HOST, config.web.port)
        # Dev mode still authenticates: only whoever sees this terminal gets in.
        print(f"SmartPop dev mode: open http://{BIND_HOST}:{config.web.port}/_dev/login?token={dev_token}",
              file=sys.stderr, flush=True)
    else:
        log.info("SmartPop backend listening on %s", socket_path(paths))
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        watcher.stop()
        server.close()
        if not dev_token:
            _remove_own_socket(socket_path(paths))
        log.info("SmartPop backend stopped")


def _remove_own_socket(path: Path) -> None:
    """Remove our socket on the way out, so the next start finds a clean directory."""
    try:
        info = os.lstat(path)
        if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid():
            path.unlink()
    except OSError:
        pass
