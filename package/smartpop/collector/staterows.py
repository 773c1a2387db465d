"""What the state store hands a poll: a server message's identity, its row, a mailbox's rows (pure)."""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional


class Key(NamedTuple):
    """Identity of one message on the server."""

    account: str
    folder: str
    uidvalidity: str
    uid: str


class MessageRow(NamedTuple):
    """What the store knows about one server message."""

    state: str
    first_seen: float
    done_at: Optional[float]
    next_try: Optional[float]
    attempts: int
    last_error: Optional[str] = None


class MailboxState(NamedTuple):
    """The store's rows of one mailbox generation, by uid, kept small for 100,000 kept messages.

    Of a done message a poll only needs when it was done (delete_after_days): a float per
    uid instead of a row object saves most of the memory of a poll that finds nothing new.
    """

    done: Dict[str, Optional[float]]  # uid -> done_at
    open: Dict[str, MessageRow]  # uid -> row, for messages not placed yet
    # uid -> size recorded when done, for done uids the server now lists with another size
    reused: Dict[str, int]


def reused_uid(recorded: Optional[int], listed: Optional[int]) -> bool:
    """True if a done uid listed with size `listed` cannot be the message recorded with size `recorded`."""
    # Unknown on either side (a record from before sizes were kept, a server that lists 0): no verdict.
    return bool(recorded) and bool(listed) and recorded != listed
