"""What the runner and the daemon need from a provider mailbox, whatever the protocol.

This module only states the contract; it imports no protocol. The implementations
(pop3.Pop3Source, imap.ImapSource) depend on it, and sources.py maps a protocol name to
one of them, so the dependency runs one way: sources -> pop3/imap -> source.
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Protocol, Sequence, Tuple, runtime_checkable

Sink = Callable[[bytes], None]


class RemoteMessage(NamedTuple):
    """One message on the server: its stable id, size and the protocol's handle."""

    uid: str
    size: int
    ref: str


class RefusedDelete(NamedTuple):
    """A deletion the server refused: the message stays, and a later run deletes it again."""

    ref: str
    reason: str


@runtime_checkable
class Source(Protocol):
    """A logged-in mailbox session. Deletions become final only in `finish()`.

    `folder` is the selected folder for IMAP and "" for POP3 (which has none);
    `uidvalidity` is "" where the protocol has no such thing.
    """

    protocol: str
    greeting: str
    uidvalidity: str
    folder: str

    def list(self) -> List[RemoteMessage]:
        """Every message currently in the mailbox."""

    def fetch_ahead(self, upcoming: Sequence[RemoteMessage]) -> None:
        """Hint: these messages are fetched next, in this order (the protocol may ask for them early)."""

    def fetch(self, ref: str, sink: Sink) -> None:
        """Stream the message's bytes (as the server stores them) into `sink`, in pieces."""

    def delete(self, ref: str) -> None:
        """Mark the message for deletion (POP3 DELE, IMAP \\Deleted)."""

    def finish(self) -> List[RefusedDelete]:
        """Commit deletions and log out (POP3 QUIT, IMAP UID EXPUNGE + LOGOUT); returns the refused deletions."""

    def abort(self) -> None:
        """Drop the connection without committing anything."""


@runtime_checkable
class IdleSource(Source, Protocol):
    """A source that can wait for news in IMAP IDLE (RFC 2177) with its folder selected."""

    capabilities: Tuple[bytes, ...]

    @property
    def exists(self) -> int:
        """The message count the folder had when it was selected (-1 if unknown)."""

    def idle_start(self) -> None:
        """Enter IDLE and wait for the server's go-ahead (blocking)."""

    def idle_fileno(self) -> int:
        """The socket to select() on while in IDLE."""

    def idle_read(self) -> Optional[List[bytes]]:
        """Lines the server sent during IDLE, without blocking; None once the connection is closed."""

    def idle_done(self) -> List[bytes]:
        """Leave IDLE (blocking); returns the untagged lines that came meanwhile."""
