"""Issue 12 §2/§3: smaller losses (fingerprint dedup, reused UIDLs, huge recipient lists) and RFC 6855/6856."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from smartpop.collector import delivery, service, state, statedb, trace
from support.collect import Env, body_of, message
from support.fakeimap import FakeImap
from support.fakepop3 import FakePop3

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


def _fake_account(env: Env, server: FakePop3, **over: Any) -> Dict[str, Any]:
    return env.account(host="127.0.0.1", port=server.port, security="none", allow_insecure=True,
                       username=server.user, password=server.password, **over)


def test_a_reused_uidl_with_another_size_is_a_new_message(env: Env) -> None:
    env.users("anna")
    first, second = message(1, env.addr("anna")), message(2, env.addr("anna"), body="A longer, different text.\n")
    server = FakePop3([("UID-1", first)]).start()
    try:
        config = env.write_config([_fake_account(env, server)])
        assert service.fetch_all(env.paths, config).results["sammel"].collected == 1
        assert server.messages == []
        # The server hands the next message the UIDL the deleted one had.
        server.put("UID-1", second)
        result = service.fetch_all(env.paths, config).results["sammel"]
        assert result.ok and result.collected == 1, result
        assert sorted(body_of(m) for m in env.local("anna")) == sorted([body_of(first), body_of(second)])
        assert server.messages == []
        retrs = [c for c in server.commands if c.startswith("RETR")]
        assert len(retrs) == 2  # the second message was read before it was deleted
        # A third poll finds nothing new and fetches nothing.
        server.commands.clear()
        assert service.fetch_all(env.paths, config).results["sammel"].collected == 0
        assert not [c for c in server.commands if c.startswith("RETR")]
    finally:
        server.stop()


def test_a_kept_message_listed_with_its_size_is_not_fetched_again(env: Env) -> None:
    env.users("anna")
    server = FakePop3([("UID-1", message(1, env.addr("anna")))]).start()
    try:
        config = env.write_config([_fake_account(env, server, keep_on_server=True)])
        assert service.fetch_all(env.paths, config).results["sammel"].collected == 1
        server.commands.clear()
        assert service.fetch_all(env.paths, config).results["sammel"].collected == 0
        assert not [c for c in server.commands if c.startswith("RETR")]
        assert len(env.local("anna")) == 1 and len(server.messages) == 1
    finally:
        server.stop()


def test_a_store_from_before_sizes_were_kept_is_upgraded_and_never_guesses(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    conn = sqlite3.connect(str(path))
    conn.executescript(statedb.SCHEMA)  # today's tables, without the columns added since
    conn.execute("INSERT INTO messages (account, folder, uidvalidity, uid, state, first_seen, done_at, size)"
                 " VALUES ('sammel', '', '', 'u1', 'done', 1, 1, 123)")
    conn.commit()
    conn.close()
    store = state.Store(path)
    try:
        known = store.messages_of("sammel", "", "", {"u1": 999})
        assert "u1" in known.done and not known.reused  # no listed size recorded: no verdict
        store.mark_done(state.Key("sammel", "", "", "u2"), "", "", 10, 10)
        known = store.messages_of("sammel", "", "", {"u1": 999, "u2": 11})
        assert known.reused == {"u2": 10} and "u2" not in known.done
    finally:
        store.close()


def test_thousands_of_local_recipients_are_placed_in_one_run(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.users("anna", "ben")
    unknown = [f"n{i}.{env.tag}@firma.test" for i in range(3000)]  # no such mailboxes: Postfix refuses them
    to = ", ".join([env.addr("anna"), env.addr("ben"), *unknown])
    body = "To the whole company.\n"
    raw = (f"Return-Path: <boss@remote.test>\nFrom: boss@remote.test\nTo: {to}\nSubject: all hands\n"
           f"Message-ID: <all.{env.tag}@remote.test>\nDate: Sat, 28 Nov 2026 06:00:00 +0000\n\n{body}").encode()
    env.fill([raw])
    config = env.write_config()
    started = time.monotonic()
    result = service.fetch_all(env.paths, config).results["sammel"]
    took = time.monotonic() - started
    assert result.ok and result.collected == 1 and result.fallback == 1, result
    assert took < 60, took  # was: Postfix hung up after 20 refusals, the message stayed, every run
    assert [body_of(m) for m in env.local("anna")] == [body.encode()]
    assert [body_of(m) for m in env.local("ben")] == [body.encode()]
    fallback = env.local("postmaster")
    assert len(fallback) == 1 and body_of(fallback[0]) == body.encode()  # one copy covers all the others
    assert env.left_on_provider() == 0
    assert fallback[0].count(b"X-SmartPop-Fallback:") == trace.FALLBACK_NOTES + 1
    assert b"and 2980 more recipients" in fallback[0]



def test_a_long_list_of_real_mailboxes_goes_in_bounded_transactions(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "RCPT_MAX", 30, raising=False)
    names = [f"u{i}" for i in range(70)]
    env.users(*names)
    body = "Seventy colleagues.\n"
    to = ", ".join(env.addr(n) for n in names)
    env.fill([(f"From: boss@remote.test\nTo: {to}\nSubject: all\nMessage-ID: <seventy.{env.tag}@remote.test>\n\n"
               f"{body}").encode()])
    result = service.fetch_all(env.paths, env.write_config()).results["sammel"]
    assert result.ok and result.collected == 1 and result.fallback == 0, result
    queue_ids = set()
    for name in names:
        got = env.local(name)
        assert [body_of(m) for m in got] == [body.encode()], name
        queue_ids.add(re.search(rb"with E?SMTP id (\w+)", got[0]).group(1))  # type: ignore[union-attr]
    assert len(queue_ids) == 3  # 30 + 30 + 10 recipients, one transaction each
    assert env.left_on_provider() == 0


def _eight_bit(to: str, n: int) -> bytes:
    return (f"Return-Path: <jürgen@remote.test>\nDelivered-To: {to}\nFrom: Jürgen Müller <jm@remote.test>\n"
            f"To: {to}\nSubject: Grüße {n}\nMessage-ID: <utf8.{n}.{os.urandom(4).hex()}@remote.test>\n\n"
            f"Schöne Grüße, Nummer {n}.\n").encode()


def test_pop3_utf8_mode_is_asked_for_where_offered(env: Env) -> None:
    env.users("anna", "ben")
    messages = [_eight_bit(env.addr("anna"), 1), _eight_bit(env.addr("ben"), 2)]
    server = FakePop3([("A1", messages[0]), ("A2", messages[1])], courier_utf8=True).start()
    try:
        result = service.fetch_all(env.paths, env.write_config([_fake_account(env, server)])).results["sammel"]
        assert result.ok and result.collected == 2 and result.fallback == 0, result
        assert [body_of(m) for m in env.local("anna")] == [body_of(messages[0])]
        assert [body_of(m) for m in env.local("ben")] == [body_of(messages[1])]
        assert env.local("postmaster") == [] and server.messages == []
        assert server.commands.index("UTF8") < server.commands.index(f"USER {server.user}")
    finally:
        server.stop()


def test_pop3_without_utf8_in_capa_is_not_sent_utf8(env: Env) -> None:
    env.users("anna")
    server = FakePop3([("A1", message(1, env.addr("anna")))]).start()
    try:
        assert service.fetch_all(env.paths, env.write_config([_fake_account(env, server)])).ok
        assert "UTF8" not in server.commands and len(env.local("anna")) == 1
    finally:
        server.stop()


def test_imap_utf8_accept_is_enabled_where_offered(env: Env) -> None:
    env.users("anna", "ben")
    messages = [_eight_bit(env.addr("anna"), 1), _eight_bit(env.addr("ben"), 2), message(3, env.addr("anna"))]
    server = FakeImap(messages).start()
    try:
        account = env.account(protocol="imap", host="127.0.0.1", port=server.port, security="none",
                              allow_insecure=True, username=server.user, password=server.password)
        result = service.fetch_all(env.paths, env.write_config([account])).results["sammel"]
        assert result.ok and result.collected == 3 and result.fallback == 0, result
        assert sorted(body_of(m) for m in env.local("anna")) == sorted(body_of(m) for m in messages[0::2])
        assert [body_of(m) for m in env.local("ben")] == [body_of(messages[1])]
        assert env.local("postmaster") == [] and server.messages == {}
        enable = server.commands.index("ENABLE UTF8=ACCEPT")
        assert enable < next(i for i, c in enumerate(server.commands) if c.startswith("SELECT"))
    finally:
        server.stop()
