"""A good NAS citizen (issue 14): an idle `serve` writes nothing to disk, and IDLE is the schedule.

Disks on a NAS hibernate; a package that writes on every poll that found nothing keeps them
spinning all day. These tests run the real `smartpop serve` and watch its data dir with
inotify and its /proc/PID/io while it polls an empty POP3 mailbox and waits in IMAP IDLE.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Callable, List

import pytest

from smartpop.collector import idle, service
from smartpop.collector.statusread import read_account_status
from support.collect import Env, child_env, message
from support.diskwrites import TreeWatch, write_bytes
from support.fakeimap import FakeImap
from support.faultproxy import TcpProxy
from support.ports import free_ports

pytestmark = pytest.mark.mailstack


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Wait for an event (not a timing assertion): fail only if it never happens."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def _wakes(pid: int) -> int:
    """Voluntary context switches of the process's main thread so far."""
    for line in open(f"/proc/{pid}/task/{pid}/status"):
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_idle_serve_writes_nothing_and_idle_is_the_schedule(env: Env) -> None:
    env.users("anna")
    imap_box, imap_password = env.addr("imapbox", "provider.test"), "imap-pw-x1"
    env.stack.add_users([(imap_box, imap_password)])
    pop_proxy = TcpProxy(env.stack.pop3s_port).start()
    imap_proxy = TcpProxy(env.stack.imaps_port, idle_timeout=None).start()
    env.write_config([
        env.account(name="pop", port=pop_proxy.port, interval=10),
        env.account(name="push", protocol="imap", port=imap_proxy.port, idle=True, interval=10,
                    username=imap_box, password=imap_password),
    ], web={"port": free_ports(1)[0]})
    proc = subprocess.Popen([sys.executable, "-m", "smartpop", "--data", str(env.data), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    watch = None
    try:
        _wait_for(lambda: {"pop", "push"} <= set(read_account_status(env.paths)) or proc.poll() is not None,
                  "the first run of both accounts")
        assert proc.poll() is None
        # The IMAP account now waits in IDLE: its session stays open, and nothing else connects.
        _wait_for(lambda: read_account_status(env.paths)["push"].get("push") == "idle", "IDLE taking over")
        # Recording "idle" was a commit. The first read after a commit moves the reader's mark in
        # SQLite's -shm (a page written through mmap, in write_bytes but invisible to inotify):
        # the cost of that commit, not of a quiet poll. So the window starts after one more poll.
        # (CI caught that page once, when the first poll after the commit fell into the window.)
        settled = pop_proxy.connections
        _wait_for(lambda: pop_proxy.connections >= settled + 1, "one POP3 poll after IDLE took over", timeout=60)
        time.sleep(1.5)  # that poll's session ends
        watch = TreeWatch(env.data)
        written, polls, imap_sessions = write_bytes(proc.pid), pop_proxy.connections, imap_proxy.connections
        main_wakes = _wakes(proc.pid)
        # Three polls of the POP3 account that find nothing (the interval is 10 s).
        _wait_for(lambda: pop_proxy.connections >= polls + 3, "three more POP3 polls", timeout=90)
        time.sleep(1.0)  # the last poll's session ends
        events = watch.collect()
        log_tail = env.paths.log_file.read_text()[-3000:]
        assert events == [], f"an idle poll wrote to the data dir: {events[:20]}; log: {log_tail}"
        assert write_bytes(proc.pid) == written, "an idle poll wrote to the disk"
        assert imap_proxy.connections == imap_sessions, "an account in IDLE was polled as well"
        # The web server's loop (the main thread) sleeps through the polls: no 1-s tick
        # (it woke 30 times in these ~30 s when waitress's loop timeout was 1 s).
        assert _wakes(proc.pid) - main_wakes <= 3
        assert proc.poll() is None

        # The watch does see writes: mail arriving is collected (and recorded) at once by push.
        env.fill([message(1, env.addr("anna"))], mailbox=imap_box)
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "the pushed message", timeout=60)
        assert any(path.startswith("state.sqlite3") for path, _ in watch.collect())
        assert write_bytes(proc.pid) > written
    finally:
        if watch is not None:
            watch.close()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
        pop_proxy.stop()
        imap_proxy.stop()
    assert proc.returncode == 0, err[-2000:]
    # "Last checked" was kept in memory and is written on stop.
    status = read_account_status(env.paths)["pop"]
    assert status["last_error"] is None and status["last_run"] is not None
    last_run = time.mktime(time.strptime(status["last_run"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert time.time() - last_run < 30, status


def test_idle_is_renewed_on_the_same_connection_and_still_pushes(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 2177: IDLE is renewed before 29 minutes; here "29 minutes" are 3 s, so it renews
    # several times during the test, each time on the same connection (no new login, no poll).
    monkeypatch.setattr(idle, "MAX_IDLE", 3.0)
    monkeypatch.setattr(idle, "RENEW_MARGIN", 1.0)
    renewals: List[int] = []
    original = idle.IdleSession.renew

    def counted(session: idle.IdleSession) -> None:
        original(session)
        renewals.append(1)

    monkeypatch.setattr(idle.IdleSession, "renew", counted)
    env.users("anna")
    proxy = TcpProxy(env.stack.imaps_port, idle_timeout=None).start()
    config = env.write_config([env.account(protocol="imap", port=proxy.port, idle=True, interval=3600)])
    handle = service.start_daemon(env.paths, config)
    try:
        _wait_for(lambda: (read_account_status(env.paths).get("sammel") or {}).get("push") == "idle", "IDLE")
        sessions = proxy.connections
        _wait_for(lambda: len(renewals) >= 3, "three renewals of IDLE", timeout=60)
        assert proxy.connections == sessions, "renewing IDLE opened a new connection (or the account was polled)"
        env.fill([message(1, env.addr("anna"))])
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "a push after the renewals", timeout=60)
    finally:
        assert handle.stop(timeout=30)
        proxy.stop()
    assert env.left_on_provider() == 0


def test_an_idle_start_that_fails_once_is_tried_again_soon_not_after_the_interval(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # With IDLE as the schedule the interval may be an hour: one dropped connection while IDLE
    # starts must not leave the account polling (and its mail waiting) for that hour.
    from smartpop.collector import daemon

    monkeypatch.setattr(daemon, "IDLE_RETRY", 1.0)
    env.users("anna")
    proxy = TcpProxy(env.stack.imaps_port, idle_timeout=None).start()
    proxy.cut(1, 0)  # connection 0: the first run; connection 1: IDLE, dropped before the greeting
    config = env.write_config([env.account(protocol="imap", port=proxy.port, idle=True, interval=3600)])
    handle = service.start_daemon(env.paths, config)
    try:
        _wait_for(lambda: "IDLE could not start" in str((read_account_status(env.paths).get("sammel") or {})
                                                        .get("push") or ""), "the failed IDLE start in the status")
        _wait_for(lambda: (read_account_status(env.paths).get("sammel") or {}).get("push") == "idle",
                  "IDLE after the retry", timeout=30)
        assert proxy.connections == 4  # run, failed IDLE, run, IDLE: no loop of logins
        env.fill([message(1, env.addr("anna"))])
        _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "a push once IDLE works", timeout=60)
    finally:
        assert handle.stop(timeout=30)
        proxy.stop()
    assert env.left_on_provider() == 0


def test_without_idle_the_account_is_polled_and_status_says_why(env: Env) -> None:
    env.users("anna")
    server = FakeImap([]).start()
    try:
        account = env.account(protocol="imap", host="127.0.0.1", port=server.port, security="none",
                              allow_insecure=True, username=server.user, password=server.password, idle=True,
                              interval=10)
        handle = service.start_daemon(env.paths, env.write_config([account]))
        try:
            # Under load a first IDLE start can fail on the connection ("IDLE could not start"), which
            # is retried the next round: wait for the status that names the server's real reason.
            _wait_for(lambda: "does not offer IMAP IDLE" in str(
                (read_account_status(env.paths).get("sammel") or {}).get("push") or ""),
                "the status saying IDLE is not available")
            push = read_account_status(env.paths)["sammel"]["push"]
            assert push.startswith("polling every 10 s:"), push
            selects = sum(c.upper().startswith("SELECT") for c in server.commands)
            server.messages[1] = message(1, env.addr("anna"))
            _wait_for(lambda: len(env.stack.maildir(env.addr("anna"))) == 1, "collection by polling", timeout=60)
            assert sum(c.upper().startswith("SELECT") for c in server.commands) > selects
        finally:
            assert handle.stop(timeout=30)
    finally:
        server.stop()
    # Once stopped, nobody waits for this account's mail any more: the status says so.
    assert read_account_status(env.paths)["sammel"]["push"] is None


def test_a_server_that_drops_idle_at_once_gets_no_login_loop(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every IDLE session ends as soon as it starts: without care that is run, IDLE, run, IDLE...
    # (a login loop that could get the account locked at the provider). Poll at the interval instead.
    import socket

    from smartpop.collector import daemon
    from smartpop.collector.runner import AccountResult

    runs: List[str] = []
    opened: List[socket.socket] = []

    def run_account(paths: object, config: object, account: object, **_: object) -> AccountResult:
        runs.append("run")
        return AccountResult("sammel", remaining=0)

    class Dropped(daemon.IdleSession):
        def __init__(self, account: object) -> None:  # no server behind it: IdleSession.__init__ unused
            self.account, self.mail, self.started = account, False, time.monotonic()
            mine, peer = socket.socketpair()
            peer.close()  # the server hung up: readable at once, with nothing to read
            opened.append(mine)
            self._sock = mine

        def fileno(self) -> int:
            return self._sock.fileno()

        def due(self) -> float:
            return self.started + 3600

        def news(self) -> None:  # type: ignore[override]
            return None

        def close(self) -> None:
            self._sock.close()

    monkeypatch.setattr(daemon, "run_account", run_account)
    monkeypatch.setattr(daemon.IdleSession, "open",
                        classmethod(lambda cls, account, known=-1, credential=None: Dropped(account)))
    handle = service.start_daemon(env.paths, env.write_config([env.account(protocol="imap", idle=True,
                                                                           interval=3600)]))
    try:
        _wait_for(lambda: len(opened) >= 1, "the first IDLE session")
        _wait_for(lambda: str((read_account_status(env.paths).get("sammel") or {}).get("push") or "")
                  .startswith("polling every 3600 s: the server ended IDLE"), "the status saying why it polls")
        time.sleep(1.0)  # a loop would have made dozens of runs by now
    finally:
        assert handle.stop(timeout=30)
    assert len(runs) == 1 and len(opened) == 1, (len(runs), len(opened))
