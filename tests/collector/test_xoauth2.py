"""SASL XOAUTH2 on the wire (issue 18): IMAP AUTHENTICATE and POP3 AUTH against the fake servers.

Checks the exact bytes sent (SASL-IR or the two-step form, POP3's 255-octet line rule, a 2 KB
token), the error challenge answered with an empty line, and the refusal of a server that
does not offer XOAUTH2.
"""

from __future__ import annotations

import base64
import logging
from typing import Iterator, List

import pytest

from smartpop.collector import sources
from smartpop.collector.credential import Credential
from smartpop.config.schema import Account
from smartpop.config.secret import Secret
from smartpop.errors import AuthError, ConnectError
from smartpop.oauth import sasl
from support.fakeimap import FakeImap
from support.fakepop3 import FakePop3

MESSAGE = b"From: a@provider.test\r\nTo: b@firma.test\r\nSubject: hi\r\n\r\nhello\r\n"
USER = "sammel@provider.test"
SHORT = "tok-short-1"
LONG = "L" * 2048  # a real Microsoft token is this long or longer


def _account(protocol: str, port: int) -> Account:
    return Account(name="box", protocol=protocol, host="127.0.0.1", port=port, security="none",
                   username=USER, password=Secret("unused-password"), allow_insecure=True)


def _token(token: str, user: str = USER) -> Credential:
    return Credential("xoauth2", user, Secret(token), expires_at=None)


def _collect(protocol: str, port: int, token: str) -> List[bytes]:
    source = sources.open_source(_account(protocol, port), 10, _token(token))
    got: List[bytes] = []
    try:
        for remote in source.list():
            parts: List[bytes] = []
            source.fetch(remote.ref, parts.append)
            got.append(b"".join(parts))
            source.delete(remote.ref)
        source.finish()
    finally:
        source.abort()
    return got


def _after(lines: List[bytes], start: bytes) -> List[bytes]:
    """The lines from the first one that starts with `start` on."""
    index = next(i for i, line in enumerate(lines) if start in line)
    return lines[index:]


@pytest.fixture
def pop3() -> Iterator[FakePop3]:
    server = FakePop3([("U1", MESSAGE)], xoauth2_tokens={SHORT: USER, LONG: USER}).start()
    yield server
    server.stop()


def _imap(sasl_ir: bool) -> FakeImap:
    return FakeImap([MESSAGE], xoauth2_tokens={SHORT: USER, LONG: USER}, sasl_ir=sasl_ir).start()


@pytest.mark.parametrize("token", [SHORT, LONG])
def test_imap_sends_the_response_on_the_command_line_with_sasl_ir(token: str) -> None:
    server = _imap(sasl_ir=True)
    try:
        assert _collect("imap", server.port, token) == [MESSAGE]
        response = sasl.initial_response(USER, token).encode()
        auth = _after(server.lines, b"AUTHENTICATE")
        assert auth[0].endswith(b" AUTHENTICATE XOAUTH2 " + response + b"\r\n")
        assert not any(b"LOGIN" in line for line in server.lines)
        assert server.messages == {}
    finally:
        server.stop()


@pytest.mark.parametrize("token", [SHORT, LONG])
def test_imap_without_sasl_ir_sends_the_response_after_the_continuation(token: str) -> None:
    server = _imap(sasl_ir=False)
    try:
        assert _collect("imap", server.port, token) == [MESSAGE]
        auth = _after(server.lines, b"AUTHENTICATE")
        assert auth[0].endswith(b" AUTHENTICATE XOAUTH2\r\n")
        assert auth[1] == sasl.initial_response(USER, token).encode() + b"\r\n"
        assert server.messages == {}
    finally:
        server.stop()


@pytest.mark.parametrize("sasl_ir", [True, False])
def test_imap_refused_token_is_acknowledged_and_named(sasl_ir: bool, caplog: pytest.LogCaptureFixture) -> None:
    server = _imap(sasl_ir=sasl_ir)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(AuthError) as caught:
            _collect("imap", server.port, "wrong-token-xyz")
        assert "status 401" in str(caught.value) and "scope https://mail.google.com/" in str(caught.value)
        auth = _after(server.lines, b"AUTHENTICATE")
        assert auth[-1] == b"\r\n"  # sasl.FAILURE_ACK after the error challenge
        assert len(auth) == (2 if sasl_ir else 3)
        assert server.messages != {}
        response = sasl.initial_response(USER, "wrong-token-xyz")
        assert "wrong-token-xyz" not in caplog.text and response not in caplog.text
        assert "wrong-token-xyz" not in str(caught.value) and response not in str(caught.value)
    finally:
        server.stop()


def test_imap_without_auth_xoauth2_is_refused_before_sending_the_token() -> None:
    server = FakeImap([MESSAGE]).start()
    try:
        with pytest.raises(ConnectError, match="AUTH=XOAUTH2"):
            _collect("imap", server.port, SHORT)
        assert not any(b"AUTHENTICATE" in line or SHORT.encode() in line for line in server.lines)
    finally:
        server.stop()


def _longest_inline_token() -> str:
    """A token whose AUTH line (with CRLF) is exactly 255 octets."""
    for size in range(1, 300):
        first, after = sasl.pop3_auth_lines(sasl.initial_response(USER, "t" * size))
        if after is not None:
            return "t" * (size - 1)
    raise AssertionError("no boundary found")


def test_pop3_initial_response_fits_exactly_255_octets() -> None:
    token = _longest_inline_token()
    server = FakePop3([("U1", MESSAGE)], xoauth2_tokens={token: USER}).start()
    try:
        assert _collect("pop3", server.port, token) == [MESSAGE]
        auth = _after(server.lines, b"AUTH ")
        assert auth[0] == b"AUTH XOAUTH2 " + sasl.initial_response(USER, token).encode() + b"\r\n"
        assert len(auth[0]) <= 255
        assert not any(line.startswith((b"USER", b"PASS")) for line in server.lines)
        assert server.messages == []
    finally:
        server.stop()


@pytest.mark.parametrize("extra", [1, 2048])
def test_pop3_longer_response_goes_after_the_continuation(extra: int) -> None:
    token = _longest_inline_token() + "u" * extra
    server = FakePop3([("U1", MESSAGE)], xoauth2_tokens={token: USER}).start()
    try:
        assert _collect("pop3", server.port, token) == [MESSAGE]
        auth = _after(server.lines, b"AUTH ")
        assert auth[0] == b"AUTH XOAUTH2\r\n"
        assert auth[1] == sasl.initial_response(USER, token).encode() + b"\r\n"
        assert len(b"AUTH XOAUTH2 " + auth[1]) > 255
        assert server.messages == []
    finally:
        server.stop()


@pytest.mark.parametrize("token", ["refused-token-9", "B" * 2048])
def test_pop3_refused_token_is_acknowledged_and_named(pop3: FakePop3, token: str) -> None:
    with pytest.raises(AuthError) as caught:
        _collect("pop3", pop3.port, token)
    assert "status 401" in str(caught.value) and "scope https://mail.google.com/" in str(caught.value)
    auth = _after(pop3.lines, b"AUTH ")
    assert auth[-1] == b"\r\n"
    assert token not in str(caught.value)
    assert len(pop3.messages) == 1


def test_pop3_without_xoauth2_in_capa_is_refused_before_sending_the_token() -> None:
    server = FakePop3([("U1", MESSAGE)], capa=("UIDL", "USER", "SASL PLAIN")).start()
    try:
        with pytest.raises(ConnectError, match="XOAUTH2"):
            _collect("pop3", server.port, SHORT)
        assert not any(line.startswith(b"AUTH") for line in server.lines)
    finally:
        server.stop()


def test_the_challenge_payload_is_what_the_fake_servers_send() -> None:
    from support.fakepop3 import xoauth2_challenge

    assert sasl.describe_failure(xoauth2_challenge()) == "status 401, scope https://mail.google.com/, schemes Bearer"
    assert base64.b64decode(xoauth2_challenge())  # valid base64


def test_password_accounts_still_log_in_with_user_and_pass() -> None:
    server = FakePop3([("U1", MESSAGE)], xoauth2_tokens={SHORT: USER}).start()
    try:
        source = sources.open_source(Account(name="box", protocol="pop3", host="127.0.0.1", port=server.port,
                                             security="none", username=USER, password=Secret(server.password),
                                             allow_insecure=True), 10)
        source.finish()
        assert any(line.startswith(b"USER ") for line in server.lines)
        assert not any(line.startswith(b"AUTH") for line in server.lines)
    finally:
        server.stop()
