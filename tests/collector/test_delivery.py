"""The SMTP transaction on the wire: the order of commands and replies, with and without PIPELINING.

Lock-step is a pipeline of depth 1, so a server without PIPELINING must see exactly the
classic exchange (MAIL, wait, RCPT, wait, ..., DATA), and a server with it one write for the
whole envelope. The hooks around the dot run in their place: before_dot after the body,
after_dot once the dot is written.
"""

from __future__ import annotations

from typing import Iterator, List

import pytest

from smartpop.collector import delivery
from support.order_smtp import OrderSmtp

RAW = b"From: a@remote.example\nSubject: x\n\nbody\n"
CRLF = RAW.replace(b"\n", b"\r\n")
ANNA, BEN, NOBODY = "anna@firma.de", "ben@firma.de", "nobody@firma.de"
REPLIES = {f"RCPT TO:<{NOBODY}>": "550 5.1.1 <nobody@firma.de>: Recipient address rejected",
           "MAIL FROM:<bad@remote.example>": "553 5.7.1 Sender address rejected: not logged in"}
MAIL, OK_MAIL = "C: MAIL FROM:<s@remote.example>", "S: 250 2.1.0 Ok"
OK_RCPT, REFUSED = "S: 250 2.1.5 Ok", f"S: {REPLIES[f'RCPT TO:<{NOBODY}>']}"
GO, QUEUED = "S: 354 End data with <CR><LF>.<CR><LF>", "S: 250 2.0.0 Ok: queued"
BODY = ["C: <body>", "C: ."]


@pytest.fixture(params=["pipelining", "lock-step"])
def server(request: pytest.FixtureRequest) -> Iterator[OrderSmtp]:
    smtp = OrderSmtp(pipelining=request.param == "pipelining").start()
    smtp.replies.update(REPLIES)
    try:
        yield smtp
    finally:
        smtp.stop()


def _session(server: OrderSmtp) -> delivery.SmtpSession:
    return delivery.SmtpSession("127.0.0.1", server.port, timeout=10, domains=("firma.de",))


def test_a_transaction_in_wire_order(server: OrderSmtp) -> None:
    session = _session(server)
    seen: List[str] = []

    def before_dot(accepted: List[str]) -> None:
        seen.append(f"before_dot {accepted}")
        assert server.events()[-1] in (GO, "C: <body>") and "C: ." not in server.events()

    try:
        result = session.deliver("s@remote.example", [ANNA, NOBODY, BEN], lambda: [RAW], before_dot,
                                 lambda: seen.append("after_dot"))
    finally:
        session.close()
    assert result.accepted == [ANNA, BEN] and list(result.rejected) == [NOBODY] and not result.deferred
    assert result.rejected[NOBODY] == REFUSED[3:] and result.reply == QUEUED[3:] and not result.doubt
    assert seen == [f"before_dot {[ANNA, BEN]}", "after_dot"]
    commands = [MAIL, f"C: RCPT TO:<{ANNA}>", f"C: RCPT TO:<{NOBODY}>", f"C: RCPT TO:<{BEN}>", "C: DATA"]
    replies = [OK_MAIL, OK_RCPT, REFUSED, OK_RCPT, GO]
    if server.pipelining:
        envelope = commands + replies
    else:
        envelope = [event for pair in zip(commands, replies) for event in pair]
    assert server.events() == [*envelope, *BODY, QUEUED, "C: quit", "S: 221 2.0.0 Bye"]
    assert server.bodies == [CRLF]


def test_a_refused_sender_is_sent_again_as_the_null_sender(server: OrderSmtp) -> None:
    session = _session(server)
    try:
        result = session.deliver("bad@remote.example", [ANNA], lambda: [RAW])
    finally:
        session.close()
    assert result.accepted == [ANNA]
    refused = f"S: {REPLIES['MAIL FROM:<bad@remote.example>']}"
    if server.pipelining:
        first = ["C: MAIL FROM:<bad@remote.example>", f"C: RCPT TO:<{ANNA}>", "C: DATA", refused,
                 "S: 503 5.5.1 Error: need MAIL command", "S: 503 5.5.1 Error: need RCPT command"]
        second = ["C: MAIL FROM:<>", f"C: RCPT TO:<{ANNA}>", "C: DATA", OK_MAIL, OK_RCPT, GO]
    else:
        first = ["C: MAIL FROM:<bad@remote.example>", refused]
        second = ["C: MAIL FROM:<>", OK_MAIL, f"C: RCPT TO:<{ANNA}>", OK_RCPT, "C: DATA", GO]
    assert server.events() == [*first, "C: rset", "S: 250 2.0.0 Ok", *second, *BODY, QUEUED,
                               "C: quit", "S: 221 2.0.0 Bye"]


def test_no_data_without_a_recipient_and_the_connection_is_kept(server: OrderSmtp) -> None:
    session = _session(server)
    try:
        refused = session.deliver("s@remote.example", [NOBODY], lambda: [RAW])
        server.clear()
        taken = session.deliver("s@remote.example", [ANNA], lambda: [RAW])
        assert session.connects == 1
    finally:
        session.close()
    assert refused.rejected == {NOBODY: REFUSED[3:]} and not refused.accepted
    assert taken.accepted == [ANNA]
    assert server.bodies == [CRLF]


def test_without_a_recipient_lock_step_sends_no_data(server: OrderSmtp) -> None:
    session = _session(server)
    try:
        session.deliver("s@remote.example", [NOBODY], lambda: [RAW])
    finally:
        session.close()
    if server.pipelining:
        envelope = [MAIL, f"C: RCPT TO:<{NOBODY}>", "C: DATA", OK_MAIL, REFUSED,
                    "S: 503 5.5.1 Error: need RCPT command"]
    else:
        envelope = [MAIL, OK_MAIL, f"C: RCPT TO:<{NOBODY}>", REFUSED]
    assert server.events() == [*envelope, "C: rset", "S: 250 2.0.0 Ok", "C: quit", "S: 221 2.0.0 Bye"]


def test_a_refusal_at_the_dot_and_a_421_at_mail(server: OrderSmtp) -> None:
    server.replies["."] = "552 5.3.4 Message size exceeds fixed limit"
    session = _session(server)
    try:
        big = session.deliver("s@remote.example", [ANNA, BEN], lambda: [RAW])
        server.replies["MAIL FROM:<later@remote.example>"] = "421 4.3.2 Service shutting down"
        later = session.deliver("later@remote.example", [ANNA], lambda: [RAW])
    finally:
        session.close()
    assert big.rejected == {ANNA: "552 5.3.4 Message size exceeds fixed limit", BEN: big.reply}
    assert not big.accepted and not big.doubt
    assert later.deferred == {ANNA: "421 4.3.2 Service shutting down"} and not later.rejected
    assert not session.is_open  # 421: the server is closing, so is the client (no QUIT, no RSET)
    assert server.events()[-2:] == ["C: MAIL FROM:<later@remote.example>", "S: 421 4.3.2 Service shutting down"]
