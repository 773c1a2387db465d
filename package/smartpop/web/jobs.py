"""The "fetch now" job: one background collection pass whose progress the page polls."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Dict, Optional

from smartpop.collector import service as collector
from smartpop.collector.concurrency import Guards
from smartpop.config import store
from smartpop.errors import SmartPopError
from smartpop.log import redact
from smartpop.paths import Paths

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class FetchJobs:
    """Runs at most one UI-started fetch at a time and keeps the last one's outcome."""

    def __init__(self, paths: Paths, guards: Optional[Guards] = None) -> None:
        self.paths = paths
        self.guards = guards if guards is not None else Guards()  # shared with the daemon's runs in `serve`
        self._lock = threading.Lock()
        self._job: Dict[str, Any] = {"id": 0, "running": False}
        self._thread: Optional[threading.Thread] = None

    def start(self, account: Optional[str] = None) -> Dict[str, Any]:
        """Start a pass (unless one runs) and return the job snapshot."""
        with self._lock:
            if self._job.get("running"):
                return dict(self._job)
            self._job = {"id": next(_ids), "running": True, "account": account, "started": time.time(),
                         "finished": None, "progress": {}, "lines": [], "ok": None, "error": None}
            job_id = self._job["id"]
        self._thread = threading.Thread(target=self._run, args=(job_id, account), name=f"ui-fetch-{job_id}",
                                        daemon=True)
        self._thread.start()
        return self.snapshot()

    def snapshot(self) -> Dict[str, Any]:
        """A copy of the current (or last) job's state, JSON-ready."""
        with self._lock:
            job = dict(self._job)
            job["progress"] = {k: dict(v) for k, v in job.get("progress", {}).items()}
            job["lines"] = list(job.get("lines", []))
        return job

    def wait(self, timeout: float) -> None:
        """Wait for the running job (tests and shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _progress(self, job_id: int, event: Dict[str, Any]) -> None:
        with self._lock:
            if self._job.get("id") == job_id:
                name = str(event.get("account", ""))
                self._job["progress"][name] = {"phase": event.get("phase"), "done": event.get("done"),
                                               "total": event.get("total")}

    def _run(self, job_id: int, account: Optional[str]) -> None:
        outcome: Dict[str, Any] = {}
        try:
            config = store.load(self.paths)
            summary = collector.fetch_all(self.paths, config, account,
                                          progress=lambda event: self._progress(job_id, event), guards=self.guards)
            # "results" lets the page word each line in its own language; "lines" stays for API users.
            outcome = {"ok": bool(summary.ok), "lines": [redact(line) for line in summary.lines()],
                       "results": [_result(name, r) for name, r in summary.results.items()]}
        except Exception as exc:
            log.exception("fetch started from the UI failed")
            outcome = {"ok": False, "error": redact(str(exc)) or type(exc).__name__}
        with self._lock:
            if self._job.get("id") == job_id:
                self._job.update(outcome)
                self._job["running"] = False
                self._job["finished"] = time.time()


def _result(name: str, result: Any) -> Dict[str, Any]:
    """One account's outcome as plain values (the error redacted) for the page to word."""
    return {"account": name, "skipped": bool(result.skipped), "collected": result.collected,
            "fallback": result.fallback, "waiting": result.waiting,
            "error": redact(result.error) if result.error else None}


class HealthJobs:
    """"Run checks now" and the round trip: each runs at most once at a time in a thread; the page polls."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._checks: Dict[str, Any] = {"running": False, "done": 0, "total": 0, "step": "", "error": None}
        self._trip: Dict[str, Any] = {"sending": False, "error": None}

    def start_checks(self, lang: str = "en") -> Dict[str, Any]:
        """Start a check run unless one runs (here or as the daily run); return the snapshot in `lang`."""
        from smartpop.health import service

        with self._lock:
            if self._checks["running"] or service.running():
                return self.snapshot_locked(lang)
            self._checks = {"running": True, "done": 0, "total": 0, "step": "", "error": None,
                            "started": time.time()}
        threading.Thread(target=self._run_checks, name="ui-health", daemon=True).start()
        return self.snapshot(lang)

    def start_round_trip(self, lang: str = "en") -> Dict[str, Any]:
        """Send the round-trip message in a thread (a dead server takes up to the probe timeout)."""
        with self._lock:
            if not self._trip["sending"]:
                self._trip = {"sending": True, "error": None}
                threading.Thread(target=self._send_round_trip, name="ui-roundtrip", daemon=True).start()
            return self.snapshot_locked(lang)

    def snapshot(self, lang: str = "en") -> Dict[str, Any]:
        """Both jobs' state and the newest round trip's finding in `lang` (never its token), JSON-ready."""
        with self._lock:
            return self.snapshot_locked(lang)

    def snapshot_locked(self, lang: str = "en") -> Dict[str, Any]:
        """snapshot() for a caller that holds the lock."""
        from smartpop.health import roundtrip
        from smartpop.health.findings import localized

        finding = roundtrip.latest_finding(self.paths)
        trip = dict(self._trip)
        trip["finding"] = {"status": finding.status, "summary": redact(localized(finding.as_dict(), lang)),
                           "state": finding.details.get("state"), "seconds": finding.details.get("seconds"),
                           "results": finding.details.get("results") or {}} if finding else None
        return {"checks": dict(self._checks), "round_trip": trip}

    def wait(self, timeout: float) -> None:
        """Wait until neither job runs (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._checks["running"] and not self._trip["sending"]:
                    return
            time.sleep(0.05)

    def _progress(self, event: Dict[str, Any]) -> None:
        with self._lock:
            self._checks.update(done=event.get("done", 0), total=event.get("total", 0), step=event.get("step", ""))

    def _run_checks(self) -> None:
        from smartpop.health import service

        error: Optional[str] = None
        try:
            if service.run_checks(self.paths, store.load(self.paths), progress=self._progress) is None:
                error = "busy"
        except Exception as exc:
            log.exception("health checks started from the UI failed")
            error = redact(str(exc)) or type(exc).__name__
        with self._lock:
            self._checks.update(running=False, error=error, finished=time.time())

    def _send_round_trip(self) -> None:
        from smartpop.health import roundtrip

        error: Optional[str] = None
        try:
            roundtrip.start(self.paths, store.load(self.paths))
        except Exception as exc:
            if not isinstance(exc, SmartPopError):
                log.exception("round trip started from the UI failed")
            error = redact(str(exc)) or type(exc).__name__
        with self._lock:
            self._trip = {"sending": False, "error": error}
