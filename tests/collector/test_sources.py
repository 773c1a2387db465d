"""The Source contract (source.py), the protocol registry (sources.py) and what finish() reports.

Runs against the fake POP3/IMAP servers in tests/support; only the last test delivers (Postfix).
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

import pytest

from smartpop.collector import service, sources
from smartpop.collector.imap import ImapSource
from smartpop.collector.pop3 import Pop3Source
from smartpop.collector.source import IdleSource, RefusedDelete, Source
from smartpop.config.schema import Account
from smartpop.config.secret import Secret
from support.collect import Env, message
from support.fakeimap import FakeImap
from support.fakepop3 import FakePop3

MESSAGE = b"From: a@provider.test\r\nTo: b@firma.test\r\nSubject: hi\r\n\r\nhello\r\n"


def _account(protocol: str, port: int, user: str, password: str) -> Account:
    return Account(name="box", protocol=protocol, host="127.0.0.1", port=port, security="none",
                   username=user, password=Secret(password), allow_insecure=True)


# Typed helpers: under mypy these assignments are the static half of the conformance check.
def _as_source(source: Pop3Source) -> Source:
    return source


def _as_idle_source(source: ImapSource) -> IdleSource:
    return source


@pytest.fixture
def pop3() -> Iterator[FakePop3]:
    server = FakePop3([("U1", MESSAGE), ("U2", MESSAGE)]).start()
    yield server
    server.stop()


@pytest.fixture
def imap() -> Iterator[FakeImap]:
    server = FakeImap([MESSAGE, MESSAGE]).start()
    yield server
    server.stop()


def test_the_registry_knows_both_protocols_and_nothing_else() -> None:
    assert sorted(sources.CONNECT) == ["imap", "pop3"]


def test_pop3_source_keeps_the_contract(pop3: FakePop3) -> None:
    source = sources.open_source(_account("pop3", pop3.port, pop3.user, pop3.password), 10)
    try:
        assert isinstance(source, Pop3Source)
        assert isinstance(_as_source(source), Source)
        assert not isinstance(source, IdleSource)  # POP3 cannot wait in IDLE
        assert (source.protocol, source.folder, source.uidvalidity) == ("POP3", "", "")
        assert source.greeting
        assert [m.uid for m in source.list()] == ["U1", "U2"]
    finally:
        source.abort()


def test_imap_source_keeps_the_contract_and_can_idle(imap: FakeImap) -> None:
    source = sources.open_source(_account("imap", imap.port, imap.user, imap.password), 10)
    try:
        assert isinstance(source, ImapSource)
        assert isinstance(_as_idle_source(source), IdleSource) and isinstance(source, Source)
        assert (source.protocol, source.folder) == ("IMAP", "INBOX")
        assert source.uidvalidity and source.greeting
        assert [m.uid for m in source.list()] == ["1", "2"]
    finally:
        source.abort()


def test_pop3_finish_returns_the_deletions_the_server_refused(pop3: FakePop3) -> None:
    pop3.refuse_dele.add(2)
    source = sources.open_source(_account("pop3", pop3.port, pop3.user, pop3.password), 10)
    for remote in source.list():
        source.delete(remote.ref)
    refused = source.finish()
    assert refused == [RefusedDelete("2", "-ERR message is locked")]
    pairs: List[Tuple[str, str]] = [(ref, why) for ref, why in refused]  # unpacks as the runner does
    assert pairs == [("2", "-ERR message is locked")]
    assert [uid for uid, _data in pop3.messages] == ["U2"]


def test_imap_finish_expunges_and_reports_nothing_refused(imap: FakeImap) -> None:
    source = sources.open_source(_account("imap", imap.port, imap.user, imap.password), 10)
    for remote in source.list():
        source.delete(remote.ref)
    assert source.finish() == []
    assert imap.messages == {}


@pytest.mark.mailstack
def test_a_refused_dele_reaches_the_run_result_and_the_message_is_deleted_next_run(env: Env) -> None:
    env.users("anna")
    server = FakePop3([("A1", message(1, env.addr("anna"))), ("A2", message(2, env.addr("anna")))]).start()
    try:
        server.refuse_dele.add(2)
        config = env.write_config([env.account(host="127.0.0.1", port=server.port, security="none",
                                               allow_insecure=True, username=server.user,
                                               password=server.password)])
        result = service.fetch_all(env.paths, config).results["sammel"]
        assert result.collected == 2 and result.deleted == 1 and result.remaining == 1, result
        assert not result.ok and result.problems == ["DELE 2 refused: -ERR message is locked"]
        assert [uid for uid, _data in server.messages] == ["A2"]
        server.refuse_dele.clear()
        result = service.fetch_all(env.paths, config).results["sammel"]
        assert result.ok and result.collected == 0 and server.messages == [], result
        assert len(env.local("anna")) == 2  # delivered once, deleted on the second run
    finally:
        server.stop()
