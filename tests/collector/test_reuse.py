"""Connection reuse, reconnects, POP3 PIPELINING on/off, crash safety with parallel hand-over (issue 6).

No timing here: the speed of these paths is measured in bench/, these tests pin down that
they deliver exactly what the plain paths deliver.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from typing import Any, List, Optional

import pytest

from smartpop.collector import delivery, mailbox, pop3, runner, service
from smartpop.collector.runner import AccountResult
from support.collect import Env, assert_census, assert_census_after_doubt, body_of, child_env, message
from support.faultproxy import Rule, SmtpFaultProxy

pytestmark = pytest.mark.mailstack




def test_one_smtp_connection_carries_every_message(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox, "DELIVERY_CONNECTIONS", 1)
    env.users("anna", "ben")
    messages = [message(n, env.addr("anna" if n % 2 else "ben")) for n in range(12)]
    env.fill(messages)
    proxy = SmtpFaultProxy(env.stack.smtp_port).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        assert service.fetch_all(env.paths, config).ok
    finally:
        proxy.stop()
    assert proxy.connections == 1  # 12 transactions, one connection
    assert_census(env, {"anna": messages[1::2], "ben": messages[0::2]})


def test_parallel_hand_over_uses_at_most_the_configured_connections(env: Env) -> None:
    env.users("anna")
    messages = [message(n, env.addr("anna")) for n in range(20)]
    env.fill(messages)
    proxy = SmtpFaultProxy(env.stack.smtp_port).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        result = service.fetch_all(env.paths, config).results["sammel"]
    finally:
        proxy.stop()
    assert result.ok and result.collected == 20
    assert 1 <= proxy.connections <= mailbox.DELIVERY_CONNECTIONS
    assert_census(env, {"anna": messages})


def test_421_defers_only_that_message_and_the_next_one_reconnects(env: Env,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox, "DELIVERY_CONNECTIONS", 1)
    env.users("anna")
    messages = [message(n, env.addr("anna")) for n in range(1, 6)]
    env.fill(messages)
    proxy = SmtpFaultProxy(env.stack.smtp_port, [
        Rule("MAIL", "421 4.3.2 shutting down", match="sender3@"),
        Rule("DATA_END", "421 4.4.2 closing after the dot", match="sender4@"),
    ]).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        first = service.fetch_all(env.paths, config).results["sammel"]
        assert first.collected == 3 and first.waiting == 2  # 3 and 4 stay; 1, 2, 5 went through
        assert proxy.connections == 3  # each 421 closed one connection; the next message opened a new one
        assert all(rule.times == 0 for rule in proxy.rules), proxy.fired
        second = service.fetch_all(env.paths, config)
        assert second.ok, second.lines()
    finally:
        proxy.stop()
    assert_census(env, {"anna": messages})


def test_session_reconnects_when_the_server_closed_an_idle_connection(env: Env) -> None:
    env.users("anna")
    proxy = SmtpFaultProxy(env.stack.smtp_port).start()
    session = delivery.SmtpSession("127.0.0.1", proxy.port, timeout=30)
    anna = env.addr("anna")
    try:
        first = session.deliver("a@remote.test", [anna], lambda: [message(1, anna)])
        assert first.accepted == [anna]
        # The server side goes away between two transactions (as on smtpd's idle timeout).
        with proxy._lock:
            for sock in proxy._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # a FIN now, even while the proxy thread reads
                except OSError:
                    pass
        second = session.deliver("a@remote.test", [anna], lambda: [message(2, anna)])
        assert second.accepted == [anna] and not second.doubt
        assert session.connects == 2
    finally:
        session.close()
        proxy.stop()
    assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(message(n, anna)) for n in (1, 2))


def _odd_bodies(to: str) -> List[bytes]:
    """Bodies that stress the RETR scanner: dot lines, bare LF, NUL, 1000+ character lines, empty."""
    return [
        message(1, to, body=".\n..\n...\n. \n.x\nend\n"),
        message(2, to, body="bare LF\nmixed\r\nline\n" + "n\x00ul\n"),
        message(3, to, body=("L" * 999 + "\n") * 3 + "." + "d" * 1200 + "\n"),
        message(4, to, body="..\r\n.\r\n.\r\n"),
        message(5, to, body=("line with trailing dot.\n" * 4000) + ".\n"),
        message(6, to, body=""),
    ]


@pytest.mark.parametrize("pipelining", [True, False])
def test_pipelining_on_and_off_deliver_the_same_bytes(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                      pipelining: bool) -> None:
    monkeypatch.setattr(pop3, "USE_PIPELINING", pipelining)
    env.users("anna")
    originals = _odd_bodies(env.addr("anna")) * 2  # duplicates: same Message-ID and body -> delivered once
    env.fill(originals)
    config = env.write_config()
    source = pop3.Pop3Source.connect(config.accounts[0], 10)
    try:
        assert source.pipelining is pipelining  # Dovecot offers PIPELINING; the seam turns it off
    finally:
        source.abort()
    result = service.fetch_all(env.paths, config).results["sammel"]
    assert result.ok and result.collected == 12 and result.duplicates == 6
    got = sorted(body_of(m) for m in env.local("anna"))
    assert got == sorted(body_of(m) for m in originals[:6])
    assert env.left_on_provider() == 0


def test_concurrent_accounts_are_bounded(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    inside = {"now": 0, "max": 0}
    lock = threading.Condition()

    def fake_run(paths: object, config: object, account: Any, progress: object, stop: object,
                 lock_timeout: float, guards: object) -> AccountResult:
        with lock:
            inside["now"] += 1
            inside["max"] = max(inside["max"], inside["now"])
            lock.notify_all()
            # Wait (bounded) until the pool is full, so the test sees the concurrency it allows.
            lock.wait_for(lambda: inside["now"] >= runner.ACCOUNT_CONCURRENCY, timeout=10)
            inside["now"] -= 1
        return AccountResult(account.name)

    monkeypatch.setattr(service, "run_account", fake_run)
    accounts = [env.account(name=f"acct{i}") for i in range(12)]
    summary = service.fetch_all(env.paths, env.write_config(accounts))
    assert list(summary.results) == [f"acct{i}" for i in range(12)]  # every account, in config order
    assert inside["max"] == runner.ACCOUNT_CONCURRENCY


KILLS = [("after_retr", 9), ("after_data", 7), ("after_record", 6), ("after_dele", 4), ("after_dele", 11)]


@pytest.mark.parametrize(("step", "nth"), KILLS)
def test_sigkill_with_parallel_hand_over_and_batched_records(env: Env, step: str, nth: int) -> None:
    env.users("anna", "ben")
    anna, ben = env.addr("anna"), env.addr("ben")
    originals = [message(n, anna if n % 3 else ben, extra=f"Delivered-To: {ben}\n" if n % 5 == 0 else "")
                 for n in range(1, 13)]
    env.fill(originals)
    env.write_config()

    def run(crash: Optional[str]) -> subprocess.CompletedProcess[str]:
        extra = {"SMARTPOP_CRASH_AT": crash or "", "SMARTPOP_CRASH_NTH": str(nth)}
        return subprocess.run([sys.executable, "-m", "support.crashrun", "--data", str(env.data), "fetch"],
                              capture_output=True, text=True, timeout=300, env=child_env(extra))

    crashed = run(step)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    final = run(None)
    assert final.returncode == 0, final.stderr[-3000:]
    want_anna = [m for n, m in enumerate(originals, 1) if n % 3]
    want_ben = [m for n, m in enumerate(originals, 1) if not n % 3 or n % 5 == 0]
    # Copies whose 250 was not on disk yet at the kill are in doubt: sent again, marked (issue 12).
    assert_census_after_doubt(env, {"anna": want_anna, "ben": want_ben})
