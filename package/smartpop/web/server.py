"""Running the backend under waitress on 127.0.0.1, with a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import secrets
import signal
import sys
from types import FrameType
from typing import Optional

from waitress.server import create_server

from smartpop.config.schema import Config
from smartpop.paths import Paths
from smartpop.web import create_app

log = logging.getLogger(__name__)

# waitress 3.0.0 (the last release for Python 3.8) has known request-smuggling CVEs, so it
# must never listen on anything but loopback; the DSM CGI is the only client.
BIND_HOST = "127.0.0.1"


def serve(paths: Paths, config: Config, dev: bool = False) -> None:
    """Serve the web backend until SIGTERM or SIGINT; `dev` adds a printed one-time login token."""
    dev_token = secrets.token_urlsafe(24) if dev else None
    app = create_app(paths, dev_token=dev_token)
    server = create_server(app, host=BIND_HOST, port=config.web.port, threads=4, ident="SmartPop")

    from smartpop.alerts import AlertWatcher

    watcher = AlertWatcher(paths).start()

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        log.info("signal %d received, stopping", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("SmartPop backend listening on http://%s:%d", BIND_HOST, config.web.port)
    if dev_token:
        # Dev mode still authenticates: only whoever sees this terminal gets in.
        print(f"SmartPop dev mode: open http://{BIND_HOST}:{config.web.port}/_dev/login?token={dev_token}",
              file=sys.stderr, flush=True)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        watcher.stop()
        server.close()
        log.info("SmartPop backend stopped")
