"""What an SMTP reply means for the copies of a message: pure, no sockets.

One function reads every reply (`classify_reply`), so the MAIL, RCPT, DATA and dot steps of
smtpconn.py and delivery.py cannot drift apart on what counts as taken, refused for good or
worth a retry.
The outcome decides where a copy goes: taken (recorded as delivered), rejected (5xx: the
copy goes to the fallback) or deferred (it stays at the provider for the next run).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, NamedTuple, Sequence, Union

# A reply is kept for the trail and the logs on one line, this long at most.
REPLY_MAX = 300


class Outcome(enum.Enum):
    """What one SMTP reply means for the command it answers."""

    DONE = "done"  # 2xx: the command succeeded (a RCPT taken, the message taken at the dot)
    GO_ON = "go on"  # 3xx: send the rest (354 after DATA)
    TEMPORARY = "temporary"  # 4xx: try again later
    CLOSING = "closing"  # 421: temporary, and the server closes the connection
    PERMANENT = "permanent"  # 5xx: refused for good
    UNREADABLE = "unreadable"  # no valid reply (smtplib's -1 for garbage, a code outside 200-599)


class Reply(NamedTuple):
    """One reply as the hand-off uses it: the code, what it means, and its text on one line."""

    code: int
    outcome: Outcome
    text: str


def classify_reply(code: int, message: Union[bytes, str]) -> Reply:
    """The meaning of one SMTP reply (as smtplib's getreply() returns it) and its one-line text."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    # A multi-line reply comes joined with newlines: a trail entry and a log line stay one line.
    text = f"{code} {message}".replace("\n", " ")[:REPLY_MAX]
    if code == 421:
        outcome = Outcome.CLOSING
    elif 200 <= code < 300:
        outcome = Outcome.DONE
    elif 300 <= code < 400:
        outcome = Outcome.GO_ON
    elif 400 <= code < 500:
        outcome = Outcome.TEMPORARY
    elif 500 <= code < 600:
        outcome = Outcome.PERMANENT
    else:
        outcome = Outcome.UNREADABLE
    return Reply(code, outcome, text)


def lock_step_goes_on(replies: Sequence[Reply], rcpts: int) -> bool:
    """Whether the next command of MAIL, `rcpts` RCPTs, DATA is worth sending after `replies` (lock-step).

    No RCPT after a refused MAIL, no DATA when no RCPT was taken: a pipelining client has sent
    them already, and reads their (refusing) replies instead.
    """
    if replies[0].outcome is not Outcome.DONE:
        return False
    if len(replies) == 1 + rcpts:
        return any(reply.outcome is Outcome.DONE for reply in replies[1:])
    return True


@dataclass
class DeliveryResult:
    """Per-recipient outcome of one SMTP transaction.

    `doubt` is set when the terminating dot was sent but no reply came back. The copies are
    then reported as deferred: a lost connection usually died before the dot arrived, and a
    possible duplicate is better than a possible loss.
    """

    accepted: List[str] = field(default_factory=list)
    deferred: Dict[str, str] = field(default_factory=dict)
    rejected: Dict[str, str] = field(default_factory=dict)
    doubt: bool = False
    reply: str = ""
    unreachable: bool = False

    def absorb(self, part: DeliveryResult) -> None:
        """Add the copies of another transaction of the same message (its reply stays the caller's to pick)."""
        self.accepted.extend(part.accepted)
        self.deferred.update(part.deferred)
        self.rejected.update(part.rejected)
        self.doubt = self.doubt or part.doubt

    def note_rcpt(self, rcpt: str, reply: Reply) -> None:
        """File the reply to one RCPT: taken (2xx), rejected (5xx) or deferred (anything else)."""
        if reply.outcome is Outcome.DONE:
            self.accepted.append(rcpt)
        elif reply.outcome is Outcome.PERMANENT:
            self.rejected[rcpt] = reply.text
        else:
            self.deferred[rcpt] = reply.text

    def refuse(self, rcpts: Iterable[str], reply: Reply) -> None:
        """`reply` refused all of `rcpts`: rejected if permanent, else deferred; it becomes the transaction's reply."""
        target = self.rejected if reply.outcome is Outcome.PERMANENT else self.deferred
        target.update({rcpt: reply.text for rcpt in rcpts})
        self.reply = reply.text

    def refuse_accepted(self, reply: Reply) -> None:
        """`reply` came instead of the message being taken: the copies taken at RCPT are refused with it."""
        accepted, self.accepted = self.accepted, []
        self.refuse(accepted, reply)

    def lose(self, rcpts: Iterable[str], text: str) -> None:
        """The connection failed with `text`: every copy not rejected is deferred (a RCPT's own 4xx stays)."""
        self.deferred.update({rcpt: text for rcpt in self.accepted})
        self.accepted = []
        for rcpt in rcpts:
            if rcpt not in self.rejected:
                self.deferred.setdefault(rcpt, text)
        self.reply = text
