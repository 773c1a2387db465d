"""smtpreply: what one SMTP reply means for the copies of a message (pure; no server)."""

from __future__ import annotations

import io
import smtplib
from typing import List, Tuple

import pytest

from smartpop.collector.smtpreply import (
    REPLY_MAX,
    DeliveryResult,
    Outcome,
    Reply,
    classify_reply,
    lock_step_goes_on,
)


def _from_wire(raw: bytes) -> Tuple[int, bytes]:
    """What smtplib's getreply() makes of `raw`, as delivery.py reads it."""
    smtp = smtplib.SMTP()
    smtp.file = io.BufferedReader(io.BytesIO(raw))  # type: ignore[assignment]
    return smtp.getreply()


@pytest.mark.parametrize(("code", "outcome"), [
    (250, Outcome.DONE), (251, Outcome.DONE), (221, Outcome.DONE),
    (354, Outcome.GO_ON),
    (450, Outcome.TEMPORARY), (451, Outcome.TEMPORARY), (452, Outcome.TEMPORARY),
    (421, Outcome.CLOSING),
    (550, Outcome.PERMANENT), (552, Outcome.PERMANENT), (553, Outcome.PERMANENT), (554, Outcome.PERMANENT),
    (-1, Outcome.UNREADABLE), (0, Outcome.UNREADABLE), (199, Outcome.UNREADABLE), (600, Outcome.UNREADABLE),
])
def test_the_code_decides_the_outcome(code: int, outcome: Outcome) -> None:
    assert classify_reply(code, b"x") == Reply(code, outcome, f"{code} x")


def test_a_multi_line_reply_is_one_line_and_its_last_code_counts() -> None:
    code, message = _from_wire(b"452-4.5.3 Too many recipients\r\n452 4.5.3 try the rest later\r\n")
    reply = classify_reply(code, message)
    assert reply == Reply(452, Outcome.TEMPORARY, "452 4.5.3 Too many recipients 4.5.3 try the rest later")
    ehlo = classify_reply(*_from_wire(b"250-mail.example\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"))
    assert ehlo.outcome is Outcome.DONE and ehlo.text == "250 mail.example PIPELINING SMTPUTF8"


def test_garbage_is_unreadable_and_a_closed_connection_raises() -> None:
    assert classify_reply(*_from_wire(b"hello there\r\n")).outcome is Outcome.UNREADABLE
    assert classify_reply(*_from_wire(b"2x0 almost\r\n")).outcome is Outcome.UNREADABLE
    with pytest.raises(smtplib.SMTPServerDisconnected):
        _from_wire(b"")


def test_the_text_is_bounded_decoded_and_taken_as_str_too() -> None:
    long = classify_reply(550, b"y" * 1000)
    assert len(long.text) == REPLY_MAX and long.text.startswith("550 yyy")
    assert classify_reply(550, b"caf\xe9").text == "550 caf\ufffd"
    assert classify_reply(250, "r\u00fcben ok") == Reply(250, Outcome.DONE, "250 r\u00fcben ok")


def _replies(*codes: int) -> List[Reply]:
    return [classify_reply(code, b"") for code in codes]


def test_lock_step_stops_after_a_refused_mail_and_before_data_without_a_recipient() -> None:
    assert lock_step_goes_on(_replies(250), 2)
    assert not lock_step_goes_on(_replies(553), 2) and not lock_step_goes_on(_replies(451), 2)
    assert lock_step_goes_on(_replies(250, 550), 2)  # the second RCPT still goes out
    assert not lock_step_goes_on(_replies(250, 550, 451), 2)  # no DATA: nobody was taken
    assert lock_step_goes_on(_replies(250, 550, 250), 2)


def test_rcpt_replies_and_refusals_file_the_copies() -> None:
    result = DeliveryResult()
    for rcpt, code in (("a@x", 250), ("b@x", 550), ("c@x", 452), ("d@x", 251), ("e@x", -1)):
        result.note_rcpt(rcpt, classify_reply(code, b"r"))
    assert result.accepted == ["a@x", "d@x"] and result.rejected == {"b@x": "550 r"}
    assert result.deferred == {"c@x": "452 r", "e@x": "-1 r"} and result.reply == ""
    result.refuse_accepted(classify_reply(552, b"too big"))
    assert result.accepted == [] and result.rejected == {"b@x": "550 r", "a@x": "552 too big", "d@x": "552 too big"}
    assert result.reply == "552 too big"
    later = DeliveryResult(accepted=["a@x"])
    later.refuse(["a@x", "b@x"], classify_reply(421, b"bye"))
    assert later.deferred == {"a@x": "421 bye", "b@x": "421 bye"} and later.reply == "421 bye"


def test_a_lost_connection_defers_every_copy_not_rejected_and_keeps_a_rcpts_own_reply() -> None:
    result = DeliveryResult(accepted=["a@x"], deferred={"c@x": "451 later"}, rejected={"b@x": "550 no"})
    result.lose(["a@x", "b@x", "c@x", "d@x"], "connection lost")
    assert result.accepted == [] and result.rejected == {"b@x": "550 no"}
    assert result.deferred == {"a@x": "connection lost", "c@x": "451 later", "d@x": "connection lost"}
    assert result.reply == "connection lost"


def test_absorb_adds_another_transactions_copies_and_keeps_the_reply() -> None:
    """Two transactions of one message: every copy is filed once, a doubt in either stays, the reply is not taken."""
    first = DeliveryResult(accepted=["a@x.test"], deferred={"b@x.test": "451 later"}, reply="250 first")
    second = DeliveryResult(accepted=["c@x.test"], rejected={"d@x.test": "550 no"}, doubt=True, reply="250 second")
    first.absorb(second)
    assert first.accepted == ["a@x.test", "c@x.test"]
    assert first.deferred == {"b@x.test": "451 later"} and first.rejected == {"d@x.test": "550 no"}
    assert first.doubt is True and first.reply == "250 first"
