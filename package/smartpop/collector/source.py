"""What the runner needs from a provider mailbox, whatever the protocol."""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Sequence

from smartpop.config.schema import Account

Sink = Callable[[bytes], None]


class RemoteMessage(NamedTuple):
    """One message on the server: its stable id, size and the protocol's handle."""

    uid: str
    size: int
    ref: str


class Source:
    """A logged-in mailbox session. Deletions become final only in `finish()`."""

    protocol = ""
    greeting = ""
    uidvalidity = ""
    folder = ""

    def list(self) -> List[RemoteMessage]:
        """Every message currently in the mailbox."""
        raise NotImplementedError

    def fetch_ahead(self, upcoming: Sequence[RemoteMessage]) -> None:
        """Hint: these messages are fetched next, in this order (the protocol may ask for them early)."""

    def fetch(self, ref: str, sink: Sink) -> None:
        """Stream the message's bytes (as the server stores them) into `sink`, in pieces."""
        raise NotImplementedError

    def delete(self, ref: str) -> None:
        """Mark the message for deletion (POP3 DELE, IMAP \\Deleted)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Commit deletions and log out (POP3 QUIT, IMAP UID EXPUNGE + LOGOUT)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection without committing anything."""
        raise NotImplementedError


def open_source(account: Account, timeout: float) -> Source:
    """Connect and log in to `account` with its protocol."""
    if account.protocol == "imap":
        from smartpop.collector.imap import ImapSource

        return ImapSource.connect(account, timeout)
    from smartpop.collector.pop3 import Pop3Source

    return Pop3Source.connect(account, timeout)
