"""Faults between collector and Dovecot, and between collector and Postfix (issue 3, point 5).

A proxy drops connections mid-message and answers 421/451/452/550/552; after the faults
stop, a normal run must leave every message delivered exactly once and nothing on the provider.
"""

from __future__ import annotations

from typing import List

import pytest

from smartpop.collector import service
from smartpop.errors import ConnectError
from smartpop.status import build_status
from support.collect import Env, assert_census, message
from support.faultproxy import Rule, SmtpFaultProxy, TcpProxy

pytestmark = pytest.mark.mailstack




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
    assert_census(env, {"anna": [messages[0], messages[2]], "ben": [messages[1]]})


@pytest.mark.parametrize("pipelining", [True, False], ids=["smtp-pipelining", "smtp-lock-step"])
def test_smtp_faults_421_451_452_550_552_and_drop(env: Env, pipelining: bool) -> None:
    env.users("anna", "ben", "carl")
    anna, ben, carl = env.addr("anna"), env.addr("ben"), env.addr("carl")
    both = message(2, anna, extra=f"Delivered-To: {ben}\n")
    messages = [message(1, anna), both, message(3, carl), message(4, ben), message(5, carl),
                message(6, anna, body=("y" * 70 + "\n") * 200), message(7, ben)]
    env.fill(messages)
    proxy = SmtpFaultProxy(env.stack.smtp_port, [
        Rule("MAIL", "421 4.3.2 shutting down", match="sender1@"),         # msg 1: the session ends, deferred
        Rule("RCPT", "451 4.3.0 try later", match=ben, sender="sender2@"),    # msg 2: ben deferred, anna gets it
        Rule("RCPT", "550 5.1.1 no such user", match=carl, sender="sender3@"),  # msg 3: carl refused -> fallback
        Rule("DATA_END", "452 4.3.1 insufficient storage", match="sender4@"),  # msg 4: deferred at the dot
        Rule("DATA", "552 5.3.4 message too big", match="sender5@"),        # msg 5: refused -> fallback
        Rule("BODY_DROP", after_bytes=5000, match="sender6@"),              # msg 6: cut mid-body, deferred
    ], hide=() if pipelining else ("PIPELINING",)).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        first = service.fetch_all(env.paths, config)
        assert not first.ok and first.results["sammel"].collected == 3  # msgs 3, 5, 7
        assert first.results["sammel"].waiting == 4  # msgs 1, 2, 4, 6 stay on the provider
        report = {a["name"]: a for a in build_status(env.paths)["accounts"]}["sammel"]
        assert report["waiting"] == 4 and report["collected"] == 3 and report["fallback"] == 2
        assert report["last_run"] and report["last_success"] is None
        assert report["last_error"].startswith("4 message(s) could not be placed yet")
        assert all(rule.times == 0 for rule in proxy.rules), proxy.fired
        second = service.fetch_all(env.paths, config)
        assert second.ok, second.lines()
        report = {a["name"]: a for a in build_status(env.paths)["accounts"]}["sammel"]
        assert report["waiting"] == 0 and report["collected"] == 7 and report["last_error"] is None
        assert report["last_success"] is not None
    finally:
        proxy.stop()
    assert "sender non-delivery notification" not in env.stack.postfix_log()  # no bounce ever
    fallback = env.local("postmaster")
    assert all(b"X-SmartPop-Fallback: " + carl.encode() + b" refused: 55" in m for m in fallback)
    assert_census(env, {"anna": [messages[0], both, messages[5]], "ben": [both, messages[3], messages[6]],
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


def test_silent_server_times_out_with_one_line(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from smartpop.collector import runner

    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts (via the backlog) and never says a word
    monkeypatch.setattr(runner, "NETWORK_TIMEOUT", 2.0)
    try:
        config = env.write_config([env.account(name="silent", port=silent.getsockname()[1]), env.account()])
        summary = service.fetch_all(env.paths, config)
        with pytest.raises(ConnectError, match="timed out"):
            service.test_connection(env.paths, config.accounts[0], timeout=2.0)
    finally:
        silent.close()
    assert summary.results["silent"].error.startswith("timed out talking to localhost:")
    assert summary.results["sammel"].collected == 1 and len(env.local("anna")) == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["smtp-pipelining", "smtp-lock-step"])
def test_refused_sender_is_retried_with_null_sender(env: Env, pipelining: bool) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    proxy = SmtpFaultProxy(env.stack.smtp_port, [
        Rule("MAIL", "553 5.7.1 Sender address rejected: not logged in", match="sender1@")],
        hide=() if pipelining else ("PIPELINING",)).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        assert service.fetch_all(env.paths, config).ok
    finally:
        proxy.stop()
    delivered = env.local("anna")
    assert len(delivered) == 1 and delivered[0].startswith(b"Return-Path: <>")
    assert env.left_on_provider() == 0


def test_uidvalidity_change_does_not_deliver_again(env: Env) -> None:
    import shutil
    import time

    env.users("anna")
    originals = [message(1, env.addr("anna")), message(2, env.addr("anna"))]
    env.fill(originals)
    config = env.write_config([env.account(protocol="imap", keep_on_server=True)])
    assert service.fetch_all(env.paths, config).results["sammel"].collected == 2
    # The provider rebuilds the mailbox: same messages, new UIDVALIDITY (and new POP3 UIDLs).
    # Dovecot takes the new UIDVALIDITY from the clock: let the second change first.
    shutil.rmtree(env.stack.provider_maildir(env.catchall).parent)
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.05)
    env.fill(originals)
    result = service.fetch_all(env.paths, config).results["sammel"]
    assert result.ok and result.collected == 2 and result.duplicates == 2  # recognised, not sent again
    assert len(env.local("anna")) == 2


class _PlainOnlyServer:
    """A scripted POP3/IMAP server that never offers STLS/STARTTLS; records what clients send."""

    def __init__(self, protocol: str) -> None:
        import socket
        import threading

        self.protocol = protocol
        self.received: List[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            if self.protocol == "pop3":
                conn.sendall(b"+OK plain-only POP3\r\n")
            else:
                conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain-only IMAP\r\n")
            for line in conn.makefile("rb"):
                self.received.append(line)
                if self.protocol == "pop3":
                    conn.sendall(b"-ERR unknown command\r\n")
                else:
                    tag = line.split(b" ", 1)[0]
                    if b"CAPABILITY" in line.upper():
                        conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                    else:
                        conn.sendall(tag + b" BAD unknown command\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_starttls_not_offered_never_sends_the_password(env: Env, protocol: str) -> None:
    server = _PlainOnlyServer(protocol)
    try:
        config = env.write_config([env.account(protocol=protocol, security="starttls", port=server.port)])
        with pytest.raises(ConnectError, match="STARTTLS|STLS"):
            service.test_connection(env.paths, config.accounts[0], timeout=10)
    finally:
        server.close()
    sent = b"".join(server.received)
    assert env.password.encode() not in sent and b"PASS" not in sent.upper() and b"LOGIN" not in sent.upper()


def test_mailplus_down_ends_the_run_and_keeps_everything(env: Env) -> None:
    env.users("anna")
    env.fill([message(n, env.addr("anna")) for n in range(5)])
    config = env.write_config(delivery={"host": "127.0.0.1", "port": 1})
    result = service.fetch_all(env.paths, config).results["sammel"]
    assert not result.ok and result.error == "cannot hand mail to 127.0.0.1:1: connection to 127.0.0.1:1 refused"
    assert env.left_on_provider() == 5
    assert service.fetch_all(env.paths, env.write_config()).ok
    assert len(env.local("anna")) == 5 and env.left_on_provider() == 0
