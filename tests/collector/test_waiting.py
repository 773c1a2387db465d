"""Mail that waits on the server is never hidden: status, overview and exit code say so (issue 12 §3)."""

from __future__ import annotations

import pytest

from smartpop.status import build_status
from support.collect import Env, message
from support.faultproxy import Rule, SmtpFaultProxy

pytestmark = pytest.mark.mailstack


def test_a_message_nobody_takes_keeps_every_run_failing_until_it_is_placed(env: Env) -> None:
    env.users("anna")
    anna = env.addr("anna")
    env.fill([message(1, anna), message(2, anna)])
    proxy = SmtpFaultProxy(env.stack.smtp_port, [
        Rule("RCPT", "550 5.1.1 mailbox unavailable", match=anna, sender="sender2@"),
        Rule("RCPT", "550 5.1.1 mailbox unavailable", match=env.fallback, sender="sender2@"),
    ]).start()
    try:
        env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        first = env.run_cli("fetch")
        assert first.returncode == 1, first.stderr[-2000:]
        # Within the hour the message is not retried, but it still waits on the server.
        for _ in range(2):
            again = env.run_cli("fetch")
            assert again.returncode == 1, again.stdout + again.stderr[-2000:]
            report = {a["name"]: a for a in build_status(env.paths)["accounts"]}["sammel"]
            assert report["waiting"] == 1
            assert report["last_error"] and "waits on the server" in report["last_error"], report
            assert "550" in report["last_error"]
        status = env.run_cli("status")
        assert "waiting 1" in status.stdout and "waits on the server" in status.stdout
    finally:
        proxy.stop()
    assert env.left_on_provider() == 1
    assert len(env.local("anna")) == 1
