"""The DSM CGI's own cost per request and the CGI runs per page view (issue 13 §1).

`python -m bench.cgi [--runs 30] [--python /usr/bin/python3]` (no root, no mail servers).

DSM runs ui/index.cgi once per request it routes to the app: an interpreter start, DSM's
authenticate.cgi, the group check, and the proxy round trip to the backend on its Unix socket.
This bench runs the CGI the way DSM does (exec of the file, so its shebang line counts) with a
shell stand-in for authenticate.cgi (DSM's is a native program; a Python stand-in would add an
interpreter start that is not ours), against the real backend, and prints:

- *CGI, whole request*: wall time of one CGI process for GET /api/ping;
- *backend alone*: the same request straight to the backend's socket (proof headers set);
- *CGI overhead* = whole request - backend alone: what the CGI adds per request;
- the baselines measured in the same run: a bare `python3 -I -S -c pass` start and a static
  file answered by a plain HTTP server (what DSM's web server does for ui/static/*);
- *CGI runs per page view*: a page plus its stylesheet and script, counted at the CGI host.

Medians over --runs; the ratios are against the bare interpreter start of the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "package"), str(ROOT / "tests"), str(ROOT / "tests" / "web")]

from bench import machine  # noqa: E402
from bench.table import table  # noqa: E402

CGI = ROOT / "ui" / "index.cgi"
SCRIPT_NAME = "/webman/3rdparty/SmartPop/index.cgi"


def median_ms(run: Callable[[], object], runs: int) -> float:
    """Median wall time of `run` in ms, after one warm-up run."""
    run()  # warm the page cache once
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _shebang() -> List[str]:
    """Interpreter and flags of the CGI's first line (the kernel passes the flags as one argument)."""
    first = CGI.read_text(encoding="utf-8").splitlines()[0][2:].strip()
    python, _, flags = first.partition(" ")
    return [python] + ([flags] if flags else [])


def main(argv: List[str] | None = None) -> int:
    """Run the bench and print a markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--python", default="", help="run the CGI with this interpreter instead of its shebang")
    args = parser.parse_args(argv)

    from webrig import Backend, Browserless, CgiHost, FakeDsm, Rig, unix_request

    from smartpop.paths import Paths, ensure_data_dir

    root = Path(tempfile.mkdtemp(prefix="spbc", dir="/tmp"))
    try:
        paths = Paths(root / "data")
        ensure_data_dir(paths)
        paths.config.write_text(json.dumps({"schema_version": 1, "accounts": [], "local_domains": ["firma.de"],
                                            "fallback_recipient": "postmaster@firma.de"}))
        backend = Backend(paths)
        auth = root / "authenticate.cgi"
        auth.write_text("#!/bin/sh\necho admin\n")
        auth.chmod(0o755)
        group = root / "group"
        group.write_text("administrators:x:101:admin\n")
        env: Dict[str, str] = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": SCRIPT_NAME, "PATH_INFO": "/api/ping", "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_URI": SCRIPT_NAME + "/api/ping", "HTTP_COOKIE": "id=bench", "HTTP_X_SYNO_TOKEN": "bench",
            "SMARTPOP_CGI_DATA": str(paths.data), "SMARTPOP_AUTH_CGI": str(auth), "SMARTPOP_GROUP_FILE": str(group),
        }
        # --python: another interpreter (e.g. a 3.8 like DSM's) with the shebang's flags.
        command = [args.python, *_shebang()[1:], str(CGI)] if args.python else [str(CGI)]
        python = args.python or _shebang()[0]

        def cgi() -> None:
            out = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True).stdout
            assert b'"user":"admin"' in out.replace(b" ", b""), out[:300]

        secret = paths.web_secret.read_text().strip()
        proof = {"X-SmartPop-Proof": secret, "X-SmartPop-User": "admin", "X-SmartPop-Session": "x",
                 "X-SmartPop-Base": SCRIPT_NAME}

        def direct() -> None:
            status, _ = unix_request(backend.socket, "GET", "/api/ping", proof)
            assert status == 200

        def bare() -> None:
            subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)

        def auth_only() -> None:
            subprocess.run([str(auth)], env=env, capture_output=True, check=True)

        (root / "dsm").mkdir()
        rig_host = CgiHost(FakeDsm(root / "dsm"), paths.data)
        static_url = f"http://127.0.0.1:{rig_host.port}/webman/3rdparty/SmartPop/static/app.css"

        import requests

        def static() -> None:
            assert requests.get(static_url, timeout=10).status_code == 200

        figures = {
            "bare": median_ms(bare, args.runs),
            "auth": median_ms(auth_only, args.runs),
            "static": median_ms(static, args.runs),
            "cgi": median_ms(cgi, args.runs),
            "direct": median_ms(direct, args.runs),
        }
        overhead = figures["cgi"] - figures["direct"]
        rig_host.stop()
        backend.stop()

        # CGI runs per page view, counted at a host that serves ui/ like DSM's web server.
        rig = Rig({"schema_version": 1, "accounts": [], "local_domains": ["firma.de"],
                   "fallback_recipient": "postmaster@firma.de"})
        try:
            client = Browserless(rig, "admin")
            before = len(rig.host.calls)
            page = client.get("/accounts/")
            for url in re.findall(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"', page.text):
                target = url if url.startswith("/webman/3rdparty/SmartPop/static/") else None
                if target:
                    requests.get(f"http://127.0.0.1:{rig.host.port}{target}", timeout=10)
                else:
                    client.get(url[len(SCRIPT_NAME):])
            page_runs = len(rig.host.calls) - before
        finally:
            rig.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = figures["bare"]
    rows = [
        ["bare interpreter start (`-I -S -c pass`)", f"{figures['bare']:.1f}", "1.00x"],
        ["authenticate.cgi stand-in (sh)", f"{figures['auth']:.1f}", f"{figures['auth'] / base:.2f}x"],
        ["static file from ui/static (plain HTTP server)", f"{figures['static']:.1f}",
         f"{figures['static'] / base:.2f}x"],
        ["backend alone (socket, /api/ping)", f"{figures['direct']:.1f}", f"{figures['direct'] / base:.2f}x"],
        ["CGI, whole request (/api/ping)", f"{figures['cgi']:.1f}", f"{figures['cgi'] / base:.2f}x"],
        ["**CGI overhead** (whole - backend)", f"**{overhead:.1f}**", f"{overhead / base:.2f}x"],
    ]
    print(machine.header("SmartPop DSM CGI overhead", {}, python))
    print(f"CGI: `{' '.join(command)}` (shebang: `{CGI.read_text().splitlines()[0]}`), "
          f"median of {args.runs} runs, ms; ratio = / bare interpreter start\n")
    print(table(["what", "ms", "ratio"], rows))
    print(f"\nCGI runs per page view (page + stylesheet + script): **{page_runs}** (target 1); "
          f"target overhead < 150 ms: **{'met' if overhead < 150 else 'NOT met'}**")
    return 0


if __name__ == "__main__":
    sys.exit(main())
