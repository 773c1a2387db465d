"""Streaming a message from the provider into a spool file.

Only the header block is kept in memory (capped); the body goes to disk and is hashed on
the way, so peak memory does not depend on message size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional

from smartpop.collector.headers import Field, HeaderScan, first, parse_fields

# Headers beyond this are treated as body: still delivered byte for byte, just not parsed.
MAX_HEADER = 1024 * 1024
READ_CHUNK = 64 * 1024


class SpoolSlots:
    """Spool files reused for the messages of one run, one per message in hand.

    Creating and unlinking a file per message cost ~0.3 ms of CPU each next to the fsyncs
    of the state store and of Postfix (profile in bench/README.md); rewriting a file that
    exists costs a truncate. The files carry the account's prefix, so spool.clean() removes
    what a killed run left behind, and a 'sending' journal entry names the file that
    holds that message until the copy is recorded.
    """

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self._free: List[Path] = []
        self._all: List[Path] = []
        self._lock = threading.Lock()

    def take(self) -> Path:
        """A slot file nobody uses now (created on first need)."""
        with self._lock:
            if self._free:
                return self._free.pop()
        fd, name = tempfile.mkstemp(prefix=self.prefix + ".", suffix=".eml", dir=str(self.directory))
        os.close(fd)
        with self._lock:
            self._all.append(Path(name))
        return Path(name)

    def give_back(self, path: Path) -> None:
        """The message in `path` is finished with; the file may hold the next one."""
        with self._lock:
            self._free.append(path)

    def remove_all(self) -> None:
        """Delete every slot file (end of the run)."""
        with self._lock:
            paths, self._all, self._free = self._all, [], []
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


class SpoolWriter:
    """Receives pieces of a message, finds the header end, writes everything to a file."""

    def __init__(self, directory: Path, prefix: str, slots: Optional[SpoolSlots] = None) -> None:
        self._slots = slots
        if slots is not None:
            self.path = slots.take()
            self._file: BinaryIO = open(self.path, "r+b")  # closed in close() or discard()
        else:
            fd, name = tempfile.mkstemp(prefix=prefix + ".", suffix=".eml", dir=str(directory))
            self.path = Path(name)
            self._file = os.fdopen(fd, "wb")
        self._scan = HeaderScan()
        self._header: List[bytes] = []
        self._header_len = 0
        self._partial = b""
        self._body_hash = hashlib.sha256()
        self.size = 0

    def write(self, piece: bytes) -> None:
        """Take the next piece (any length, any split) of the message."""
        self._file.write(piece)
        self.size += len(piece)
        if self._scan.done:
            self._body_hash.update(piece.replace(b"\r", b""))
            return
        data = self._partial + piece if self._partial else piece
        self._partial = b""
        # Line by line only while in the header; the rest of the piece is hashed in one go.
        pos, end = 0, len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            line = data[pos:stop]
            if nl < 0 and self._header_len + len(line) < MAX_HEADER:
                self._partial = line  # an incomplete last line: decide when its end arrives
                return
            if self._header_len + len(line) > MAX_HEADER or not self._scan.feed_line(line):
                self._scan.done = True
                self._body_hash.update(data[pos:].replace(b"\r", b""))
                return
            self._header.append(line)
            self._header_len += len(line)
            pos = stop
            if self._scan.done:
                self._body_hash.update(data[pos:].replace(b"\r", b""))
                return

    def close(self) -> Spooled:
        """Finish the file and return what the runner needs about the message."""
        if self._partial:
            # The message ended inside its header (no body at all).
            if self._scan.feed_line(self._partial):
                self._header.append(self._partial)
                self._header_len += len(self._partial)
            else:
                self._body_hash.update(self._partial.replace(b"\r", b""))
            self._partial = b""
        if self._slots is not None:
            self._file.truncate()  # a reused file: cut off the end of a longer earlier message
        self._file.flush()
        self._file.close()
        header = b"".join(self._header)
        return Spooled(self.path, header, self._header_len, self.size, self._body_hash.hexdigest(), self._slots)

    def discard(self) -> None:
        """Close and delete the partial file (or hand the slot back)."""
        try:
            self._file.close()
        finally:
            if self._slots is not None:
                self._slots.give_back(self.path)
            else:
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass


class Spooled:
    """A message on disk: its parsed header and where the body starts."""

    def __init__(self, path: Path, header: bytes, header_len: int, size: int, body_digest: str,
                 slots: Optional[SpoolSlots] = None) -> None:
        self.path = path
        self._slots = slots
        self.header = header
        self.header_len = header_len
        self.size = size
        self.body_digest = body_digest
        self.fields: List[Field] = parse_fields(header)
        self._dedup: Optional[str] = None

    @property
    def message_id(self) -> str:
        """The Message-ID as written (may be empty)."""
        return (first(self.fields, "message-id") or "").strip()[:500]

    def dedup_digest(self) -> str:
        """Identity of the message for multidrop de-duplication ('' without a Message-ID: never a copy)."""
        if self._dedup is not None:
            return self._dedup  # asked for several times per message (lock, ledger, journal)
        if not has_identity(self.message_id):
            # Device alerts and the like: same text, no Message-ID, often no Date. Nothing tells
            # two of them from two copies of one, so no fingerprint may make one skip the other.
            self._dedup = ""
            return self._dedup
        parts = [self.message_id] + [(first(self.fields, n) or "").strip() for n in ("from", "date", "subject")]
        data = "\0".join(parts).encode("utf-8", "surrogateescape") + b"\0" + self.body_digest.encode()
        self._dedup = hashlib.sha256(data).hexdigest()
        return self._dedup

    def body_chunks(self) -> Iterator[bytes]:
        """Everything after the header block, read in bounded pieces."""
        with open(self.path, "rb") as handle:
            handle.seek(self.header_len)
            while True:
                # Blocks, not lines: the SMTP side normalises line ends across any split.
                piece = handle.read(READ_CHUNK)
                if not piece:
                    return
                yield piece

    def remove(self) -> None:
        """Delete the spool file (or hand the slot back for the next message)."""
        if self._slots is not None:
            slots, self._slots = self._slots, None
            slots.give_back(self.path)
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def has_identity(message_id: str) -> bool:
    """True if `message_id` can name one message (not empty, not just '<>' and blanks)."""
    return bool(message_id.strip("<> \t\r\n"))


def clean(directory: Path, account: str, doubt_days: int = 30) -> None:
    """Remove `account`'s leftover spool files of an interrupted run (the provider still has the mail)."""
    prefix = tempfile_prefix(account) + "."
    old = time.time() - doubt_days * 86400
    for path in directory.glob("*.eml"):
        try:
            if path.name.startswith(prefix) or (path.name.startswith("doubt-" + prefix) and path.stat().st_mtime < old):
                path.unlink()
        except OSError:
            pass


def make_spool_dir(directory: Path) -> Path:
    """Create the spool dir (0700) if needed."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def tempfile_prefix(account: str) -> str:
    """Spool file prefix for an account (names are validated: no path characters)."""
    # '+' cannot occur in an account name, so no account's prefix is another's.
    return f"in+{account}+"
