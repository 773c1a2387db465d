"""Faults between collector and Dovecot, and between collector and Postfix (issue 3, point 5).

A proxy drops connections mid-message and answers 421/451/452/550/552; after the faults
stop, a normal run must leave every message delivered exactly once and nothing on the provider.
"""

from __future__ import annotations

from typing import Dict, List

import pytest

from smartpop.collector import service
from support.collect import Env, body_of, message
from support.faultproxy import Rule, SmtpFaultProxy, TcpProxy

pytestmark = pytest.mark.mailstack


def _census(env: Env, expected: Dict[str, List[bytes]]) -> None:
    for name, messages in expected.items():
        got = sorted(body_of(m) for m in env.local(name))
        assert got == sorted(body_of(m) for m in messages), f"{name}: {len(got)} messages, expected {len(messages)}"
    assert env.left_on_provider() == 0


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_provider_connection_dropped_mid_message(env: Env, protocol: str) -> None:
    env.users("anna", "ben")
    big = "x" * 70 + "\n"
    messages = [message(1, env.addr("anna")), message(2, env.addr("ben"), body=big * 3000),
                message(3, env.addr("anna"))]
    env.fill(messages)
    port = env.stack.pop3s_port if protocol == "pop3" else env.stack.imaps_port
    proxy = TcpProxy(port).start()
    try:
        config = env.write_config([env.account(protocol=protocol, port=proxy.port)])
        proxy.cut(0, 100_000)  # the first session dies inside message 2 (about 210 KB)
        first = service.fetch_all(env.paths, config)
        assert proxy.cut_done.is_set()
        result = first.results["sammel"]
        assert not first.ok and ("lost" in result.error or "dropped" in result.error), result.error
        assert result.collected == 1
        second = service.fetch_all(env.paths, config)
        assert second.ok, second.lines()
    finally:
        proxy.stop()
    _census(env, {"anna": [messages[0], messages[2]], "ben": [messages[1]]})


def test_smtp_faults_421_451_452_550_552_and_drop(env: Env) -> None:
    env.users("anna", "ben", "carl")
    anna, ben, carl = env.addr("anna"), env.addr("ben"), env.addr("carl")
    both = message(2, anna, extra=f"Delivered-To: {ben}\n")
    messages = [message(1, anna), both, message(3, carl), message(4, ben), message(5, carl),
                message(6, anna, body=("y" * 70 + "\n") * 200), message(7, ben)]
    env.fill(messages)
    proxy = SmtpFaultProxy(env.stack.smtp_port, [
        Rule("MAIL", "421 4.3.2 shutting down", match="sender1@"),         # msg 1: the session ends, deferred
        Rule("RCPT", "451 4.3.0 try later", match=ben),                     # msg 2: ben deferred, anna gets it
        Rule("RCPT", "550 5.1.1 no such user", match=carl),                 # msg 3: carl refused -> fallback
        Rule("DATA_END", "452 4.3.1 insufficient storage", match="sender4@"),  # msg 4: deferred at the dot
        Rule("DATA", "552 5.3.4 message too big", match="sender5@"),        # msg 5: refused -> fallback
        Rule("BODY_DROP", after_bytes=5000, match="sender6@"),              # msg 6: cut mid-body, deferred
    ]).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        first = service.fetch_all(env.paths, config)
        assert not first.ok and first.results["sammel"].collected == 3  # msgs 3, 5, 7
        assert all(rule.times == 0 for rule in proxy.rules), proxy.fired
        second = service.fetch_all(env.paths, config)
        assert second.ok, second.lines()
    finally:
        proxy.stop()
    fallback = env.local("postmaster")
    assert all(b"X-SmartPop-Fallback: " + carl.encode() + b" refused: 55" in m for m in fallback)
    _census(env, {"anna": [messages[0], both, messages[5]], "ben": [both, messages[3], messages[6]],
                  "carl": [], "postmaster": [messages[2], messages[4]]})


def test_tls_hostname_mismatch_is_refused(env: Env) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    proxy = TcpProxy(env.stack.pop3s_port, listen_host="127.0.0.2").start()  # not a name in the certificate
    try:
        config = env.write_config([env.account(host="127.0.0.2", port=proxy.port)])
        result = service.fetch_all(env.paths, config).results["sammel"]
    finally:
        proxy.stop()
    assert not result.ok and "not trusted" in result.error and "mismatch" in result.error.lower()
    assert env.left_on_provider() == 1 and env.local("anna") == []
