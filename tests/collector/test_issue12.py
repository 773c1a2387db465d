"""Issue 12 §2/§3: smaller losses (fingerprint dedup, reused UIDLs, huge recipient lists) and RFC 6855/6856."""

from __future__ import annotations

import pytest

from smartpop.collector import service
from support.collect import Env, body_of, message

pytestmark = pytest.mark.mailstack


def _alert(to: str) -> bytes:
    """A device alert: no Message-ID, no Date, the same text every time."""
    return (f"Return-Path: <nas@remote.test>\nDelivered-To: {to}\nFrom: nas@remote.test\nTo: {to}\n"
            "Subject: UPS on battery\n\nThe UPS switched to battery power.\n").encode()


def test_messages_without_message_id_are_never_copies_of_each_other(env: Env) -> None:
    env.users("anna", "ben")
    anna = env.addr("anna")
    # Three alerts with identical text (one poll), then another one in the next poll.
    env.fill([_alert(anna), _alert(anna), _alert(anna)])
    config = env.write_config()
    first = service.fetch_all(env.paths, config).results["sammel"]
    assert first.ok and first.collected == 3 and first.duplicates == 0
    env.fill([_alert(anna)])
    assert service.fetch_all(env.paths, config).results["sammel"].collected == 1
    got = env.local("anna")
    assert len(got) == 4 and all(body_of(m) == b"The UPS switched to battery power.\n" for m in got)
    assert env.left_on_provider() == 0
    # With a Message-ID a multidrop copy is still delivered once per recipient.
    shared = "<alert.1@remote.test>"
    env.fill([message(1, env.addr("ben"), msgid=shared, body="same\n"),
              message(1, env.addr("ben"), msgid=shared, body="same\n")])
    result = service.fetch_all(env.paths, config).results["sammel"]
    assert result.ok and result.duplicates == 1
    assert len(env.local("ben")) == 1 and env.left_on_provider() == 0
