"""The daily run: due a day after the last report, started from the alert watcher's wake-ups; alerts on turning bad."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from smartpop import alerts
from smartpop.config.schema import parse_config
from smartpop.health import daily, service
from smartpop.paths import Paths, ensure_data_dir

T0 = 1_800_000_000.0


def _paths(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path / "data")
    ensure_data_dir(paths)
    return paths


def _report(at: float, **statuses: str) -> Dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(at))
    return {"checked_at": stamp, "duration_seconds": 1.0, "status": "ok",
            "findings": [{"check": check, "subject": "firma.test", "status": status,
                          "summary": f"{check} says {status}; do this.", "details": {}}
                         for check, status in statuses.items()]}


def test_due_an_hour_after_start_without_a_report_then_daily(tmp_path: Path) -> None:
    """No report: first run FIRST_DELAY after start; then a day after the last report; never two at once."""
    paths = _paths(tmp_path)
    runs: List[float] = []
    gate = threading.Event()

    def run(_: Paths) -> None:
        runs.append(time.time())
        gate.wait(10)

    scheduler = daily.DailyHealth(paths, started=T0, run=run)
    before = sorted(p.name for p in paths.data.iterdir())
    assert scheduler.maybe_start(T0 + 60) is False
    assert scheduler.maybe_start(T0 + daily.FIRST_DELAY - 1) is False
    assert sorted(p.name for p in paths.data.iterdir()) == before  # nothing due: nothing written
    assert scheduler.maybe_start(T0 + daily.FIRST_DELAY) is True
    assert scheduler.maybe_start(T0 + daily.FIRST_DELAY + daily.DAY + 1) is False  # the first one still runs
    gate.set()
    scheduler.wait(10)
    assert len(runs) == 1
    # A report from the page or the CLI moves the next run to a day after it.
    service.save_report(paths, _report(T0 + 2 * daily.DAY))
    assert scheduler.maybe_start(T0 + 2 * daily.DAY + 10) is False
    assert scheduler.maybe_start(T0 + 3 * daily.DAY - 10) is False
    assert scheduler.maybe_start(T0 + 3 * daily.DAY + 1) is True
    scheduler.wait(10)
    assert len(runs) == 2


def test_an_alert_when_a_check_turns_into_a_problem_not_while_it_stays_one(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ok -> problem alerts once with the check and what to do; problem -> problem is quiet; a new problem alerts."""
    paths = _paths(tmp_path)
    config = parse_config({"local_domains": ["firma.test"]})
    sent: List[Dict[str, str]] = []
    monkeypatch.setattr(alerts, "notify", lambda _p, _c, kind, subject, text, key="": sent.append(
        {"kind": kind, "subject": subject, "text": text, "key": key}) or {})
    reports = iter([_report(T0, mx="ok", dmarc="warning"), _report(T0 + 1, mx="problem", dmarc="warning"),
                    _report(T0 + 2, mx="problem", dmarc="warning"), _report(T0 + 3, mx="problem", dmarc="problem")])

    def fake_run_all(p: Paths, c: Any, progress: Any = None, **_: Any) -> Dict[str, Any]:
        report = next(reports)
        service.save_report(p, report)
        return report

    monkeypatch.setattr(service, "run_all", fake_run_all)
    for _ in range(4):
        assert service.run_checks(paths, config) is not None
    assert [s["key"] for s in sent] == ["mx:firma.test", "dmarc:firma.test"]
    assert sent[0]["kind"] == "health" and "mx of firma.test is a problem" in sent[0]["subject"]
    assert "mx says problem; do this." in sent[0]["text"] and "SmartPop > Health" in sent[0]["text"]
    assert json.loads(paths.health_file.read_text())["checked_at"].startswith(time.strftime("%Y-%m-%d",
                                                                                            time.gmtime(T0 + 3)))


def test_the_alert_watcher_starts_the_daily_run_on_its_wake_up(tmp_path: Path) -> None:
    """The watcher's own wake-up (here: a poke) starts a due daily run in another thread."""
    paths = _paths(tmp_path)
    (paths.data / "config.json").write_text(json.dumps({"local_domains": ["firma.test"]}))
    ran = threading.Event()
    watcher = alerts.AlertWatcher(paths, interval=3600)
    watcher.daily = daily.DailyHealth(paths, started=time.time() - daily.FIRST_DELAY - 1,
                                      run=lambda _: ran.set())
    watcher.start()
    try:
        watcher.poke()
        assert ran.wait(20)
    finally:
        watcher.stop()
