"""Alerts: channels (DSM notification, e-mail via the delivery SMTP, webhook), rate limit, standing checks."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from webrig import Browserless, Rig

from smartpop import alerts
from smartpop.collector.state import Store
from smartpop.config.schema import parse_config
from smartpop.paths import Paths
from support.ports import free_ports

WEBHOOK_TOKEN = "chat-token-Zq81xVv"


class Hook:
    """A local webhook receiver that records what it got."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.received: List[Dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append({"path": self.path, "type": self.headers.get("Content-Type"), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """A Synology-Chat-like URL with a token in it."""
        return (f"http://127.0.0.1:{self.port}/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming"
                f"&version=2&token={WEBHOOK_TOKEN}")


class Sink:
    """An SMTP server standing in for MailPlus; keeps the messages."""

    def __init__(self) -> None:
        self.messages: List[Any] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(envelope)
                return "250 OK"

        self.port = free_ports(1)[0]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.server.shutdown()


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    yield server
    server.controller.stop()


@pytest.fixture
def notify_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synodsmnotify stand-in that records its argv."""
    record = tmp_path / "notify.log"
    stub = tmp_path / "synodsmnotify"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {record}\n")
    stub.chmod(0o755)
    monkeypatch.setenv("SMARTPOP_SYNODSMNOTIFY", str(stub))
    return record


def _config(hook: Hook, sink: Sink, **alerts_over: Any) -> Any:
    doc = {"schema_version": 1, "accounts": [], "local_domains": ["firma.de"],
           "fallback_recipient": "postmaster@firma.de", "delivery": {"host": "127.0.0.1", "port": sink.port},
           "alerts": {"email_to": "admin@firma.de", "webhook_url": hook.url, "dsm_notify": True, **alerts_over}}
    return parse_config(doc)


def test_defaults() -> None:
    config = parse_config({"schema_version": 1})
    assert config.alerts.failing_minutes == 30 and config.alerts.dsm_notify is True
    assert not config.alerts.webhook_url and config.alerts.email_to is None


def test_notify_sends_on_every_channel_and_rate_limits(tmp_path: Path, hook: Hook, sink: Sink,
                                                       notify_stub: Path) -> None:
    paths = Paths(tmp_path)
    config = _config(hook, sink)
    results = alerts.notify(paths, config, "fallback", "Mail went to the fallback", "2 messages", key="sammel")
    assert set(results) == {"dsm", "email", "webhook"}
    assert all(not r.startswith("failed") for r in results.values()), results
    argv = notify_stub.read_text().splitlines()
    assert argv[:3] == ["-c", "SYNO.SDS._ThirdParty.App.SmartPop", "@administrators"]
    assert argv[3] == "Mail went to the fallback"
    assert len(sink.messages) == 1 and sink.messages[0].rcpt_tos == ["admin@firma.de"]
    assert b"Subject: [SmartPop] Mail went to the fallback" in sink.messages[0].content
    assert len(hook.received) == 1
    assert hook.received[0]["type"] == "application/x-www-form-urlencoded"
    assert b"payload=" in hook.received[0]["body"]
    # Same alert again: suppressed; a different key is not.
    assert alerts.notify(paths, config, "fallback", "again", "x", key="sammel") == {}
    assert len(hook.received) == 1
    assert alerts.notify(paths, config, "fallback", "other", "x", key="other")
    assert len(hook.received) == 2
    assert os.stat(tmp_path / "alerts-state.json").st_mode & 0o777 == 0o600


def test_dsm_not_available_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: Hook,
                                       sink: Sink) -> None:
    monkeypatch.setenv("SMARTPOP_SYNODSMNOTIFY", str(tmp_path / "absent"))
    config = _config(hook, sink)
    with pytest.raises(alerts.AlertError, match="not available on this system"):
        alerts.send_test(config, "dsm")
    results = alerts.notify(Paths(tmp_path), config, "relay_drift", "drift", "x")
    assert results["dsm"] == "failed: not available on this system"
    assert "webhook answered HTTP 200" in results["webhook"]


def test_check_raises_standing_alerts(tmp_path: Path, hook: Hook, sink: Sink, notify_stub: Path) -> None:
    paths = Paths(tmp_path)
    config = _config(hook, sink, failing_minutes=30)
    now = time.time()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600))
    report = {"accounts": [
        {"name": "a", "enabled": True, "last_error": "login refused", "last_success": old, "fallback": 0},
        {"name": "b", "enabled": True, "last_error": "timeout", "last_success": recent, "fallback": 3},
        {"name": "c", "enabled": False, "last_error": "x", "last_success": old, "fallback": 0},
    ]}
    raised = alerts.check(paths, config, report, "applied", now=now)
    assert raised == ["account_failing:a"]
    report["accounts"][1]["fallback"] = 5
    raised = alerts.check(paths, config, report, "drift", now=now + 60)
    assert "fallback:b" in raised and "relay_drift:" in raised
    assert "account_failing:a" in raised  # still failing; notify() itself rate-limits the sending
    # Sent: a failing, b's fallback, the drift; the repeat for "a" was rate-limited.
    texts = [json.loads(parse_qs(h["body"].decode())["payload"][0])["text"] for h in hook.received]
    assert len(texts) == 3
    assert "Account a keeps failing" in texts[0] and "login refused" in texts[0]
    assert "2 message(s) collected by b" in texts[1]
    assert "Relay settings drifted" in texts[2]


def test_alerts_page_saves_and_hides_the_webhook(rig: Rig, admin: Browserless, hook: Hook) -> None:
    token = admin.csrf()
    response = admin.post("/alerts/", data={"csrf_token": token, "failing_minutes": "2", "repeat_minutes": "60",
                                            "email_to": "", "webhook_url": ""})
    assert response.status_code == 422 and 'id="err-failing_minutes"' in response.text
    response = admin.post("/alerts/", data={"csrf_token": token, "failing_minutes": "45", "repeat_minutes": "30",
                                            "email_to": "admin@firma.de", "dsm_notify": "on",
                                            "webhook_url": hook.url})
    assert response.status_code == 302
    stored = rig.config_document()["alerts"]
    assert stored["failing_minutes"] == 45 and stored["webhook_url"] == hook.url
    page = admin.get("/alerts/").text
    assert "a URL is saved" in page and WEBHOOK_TOKEN not in page
    # Saving with an empty field keeps the URL.
    admin.post("/alerts/", data={"csrf_token": token, "failing_minutes": "45", "repeat_minutes": "30",
                                 "email_to": "admin@firma.de", "webhook_url": ""})
    assert rig.config_document()["alerts"]["webhook_url"] == hook.url
    answer = admin.post("/alerts/test/webhook", data={"csrf_token": token}).json()
    assert answer["ok"] is True and "HTTP 200" in answer["message"]
    assert len(hook.received) == 1
    answer = admin.post("/alerts/test/dsm", data={"csrf_token": token}).json()
    if not alerts.dsm_available():
        assert answer["ok"] is False and "not available on this system" in answer["message"]
    admin.post("/alerts/", data={"csrf_token": token, "failing_minutes": "45", "repeat_minutes": "30",
                                 "email_to": "", "webhook_url": "", "webhook_clear": "on"})
    assert rig.config_document()["alerts"]["webhook_url"] == ""
    for body in admin.bodies:
        assert WEBHOOK_TOKEN not in body


def test_watcher_reads_the_status_report(tmp_path: Path, hook: Hook, sink: Sink, notify_stub: Path) -> None:
    paths = Paths(tmp_path)
    old = time.time() - 7200
    doc = {"schema_version": 1, "accounts": [{"name": "sammel", "protocol": "pop3", "host": "pop.provider.invalid",
                                              "security": "ssl", "username": "s@firma.de", "password": "Pw-123456"}],
           "local_domains": ["firma.de"], "fallback_recipient": "postmaster@firma.de",
           "delivery": {"host": "127.0.0.1", "port": sink.port},
           "alerts": {"webhook_url": hook.url, "dsm_notify": False}}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    # The account's figures as the collector keeps them: a failing run, the last success 2 h ago.
    store = Store(paths.state_db)
    try:
        store.run_finished("sammel", False, 0, 0, "login refused", None)
    finally:
        store.close()
    with sqlite3.connect(str(paths.state_db)) as db:
        db.execute("UPDATE account_status SET last_success=? WHERE account='sammel'", (old,))
    watcher = alerts.AlertWatcher(paths, interval=3600)
    assert watcher.run_once() == ["account_failing:sammel"]
    assert len(hook.received) == 1 and b"sammel" in hook.received[0]["body"]
    assert not notify_stub.exists()  # DSM notifications switched off
    watcher.start()
    watcher.stop()


def test_an_outdated_root_task_raises_an_alert(tmp_path: Path, hook: Hook, sink: Sink, notify_stub: Path) -> None:
    """After an upgrade the pasted command refuses to run: say so once, and only while the relay is on."""
    paths = Paths(tmp_path)
    config = _config(hook, sink)
    report = {"accounts": [], "relay": {"task_state": "current"}}
    assert alerts.check(paths, config, report, "applied") == []
    report["relay"] = {"task_state": "outdated", "task_version": "0.1.0-0001"}
    assert alerts.check(paths, config, report, "applied") == []  # relay off: the task does not matter
    config.relay.enabled = True
    assert alerts.check(paths, config, report, "applied") == ["relay_task:task"]
    texts = [json.loads(parse_qs(h["body"].decode())["payload"][0])["text"] for h in hook.received]
    assert len(texts) == 1 and "SmartPop 0.1.0-0001" in texts[0] and "paste the new command" in texts[0]


def test_a_check_that_finds_nothing_new_writes_nothing(tmp_path: Path, hook: Hook, sink: Sink) -> None:
    # The watcher checks every minute in `serve`; on an idle NAS that must not wake the disks.
    from support.diskwrites import TreeWatch

    paths = Paths(tmp_path)
    config = _config(hook, sink)
    report = {"accounts": [{"name": "sammel", "enabled": True, "last_error": None, "fallback": 3}], "relay": {}}
    assert alerts.check(paths, config, report, "applied") == []
    watch = TreeWatch(tmp_path)
    try:
        for _ in range(3):
            assert alerts.check(paths, config, report, "applied") == []
        assert watch.collect() == []
        report["accounts"][0]["fallback"] = 4  # a change is written (and alerted)
        assert alerts.check(paths, config, report, "applied") == ["fallback:sammel"]
        assert any(path.startswith("alerts-state.json") for path, _ in watch.collect())
    finally:
        watch.close()


def test_the_watcher_checks_when_poked_not_on_a_timer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: List[float] = []
    watcher = alerts.AlertWatcher(Paths(tmp_path), interval=3600)
    monkeypatch.setattr(watcher, "run_once", lambda: runs.append(time.monotonic()) or [])
    watcher.start()
    try:
        time.sleep(1.5)  # no timer fires in the meantime (not a timing assertion: the count is)
        assert runs == []
        watcher.poke()
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(runs) == 1
    finally:
        watcher.stop()
