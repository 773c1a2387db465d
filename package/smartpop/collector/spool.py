"""Streaming a message from the provider into a spool file.

Only the header block is kept in memory (capped); the body goes to disk and is hashed on
the way, so peak memory does not depend on message size. A small message (MEMORY_COPY)
stays in memory instead when the caller asks for it (the runner does).
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
# A message up to this size is kept in memory while in hand (see SpoolWriter), so the hand-over
# does not read it back from its spool file either. With one message per delivery worker in
# hand, plus the one being retrieved, that is half a megabyte per account at most.
MEMORY_COPY = 128 * 1024


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
    """Receives pieces of a message, finds the header end, writes everything to a file.

    With `in_memory`, a message of at most MEMORY_COPY bytes never touches the disk: the
    file is opened only once the message outgrows that (its pieces so far are written
    first). The spool file guards nothing (it is not fsynced, and a run that restarts
    fetches the message from the provider again); for a small message its open, write,
    truncate and close were a fifth of SmartPop's CPU per message in the throughput bench.
    """

    def __init__(self, directory: Path, prefix: str, slots: Optional[SpoolSlots] = None,
                 in_memory: bool = False) -> None:
        self._directory = directory
        self._prefix = prefix
        self._slots = slots
        self.path: Optional[Path] = None
        self._file: Optional[BinaryIO] = None  # closed in close() or discard()
        if not in_memory:
            self._open()
        self._scan = HeaderScan()
        self._header: List[bytes] = []
        self._header_len = 0
        self._partial = b""
        self._body_hash = hashlib.sha256()
        self.size = 0
        self._pieces: Optional[List[bytes]] = []  # the whole message while it is small (MEMORY_COPY)

    def _open(self) -> BinaryIO:
        if self._slots is not None:
            self.path = self._slots.take()
            self._file = open(self.path, "r+b")
        else:
            fd, name = tempfile.mkstemp(prefix=self._prefix + ".", suffix=".eml", dir=str(self._directory))
            self.path = Path(name)
            self._file = os.fdopen(fd, "wb")
        return self._file

    def write(self, piece: bytes) -> None:
        """Take the next piece (any length, any split) of the message."""
        if self._pieces is not None and self.size + len(piece) <= MEMORY_COPY:
            if self._file is not None:
                self._file.write(piece)
            self._pieces.append(piece)
        else:
            handle = self._file
            if handle is None:
                handle = self._open()
                for earlier in self._pieces or ():
                    handle.write(earlier)
            handle.write(piece)
            self._pieces = None
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
        if self._file is not None:
            if self._slots is not None:
                self._file.truncate()  # a reused file: cut off the end of a longer earlier message
            self._file.flush()
            self._file.close()
        header = b"".join(self._header)
        data = b"".join(self._pieces) if self._pieces is not None else None
        self._pieces = None
        return Spooled(self.path, header, self._header_len, self.size, self._body_hash.hexdigest(), self._slots,
                       data=data)

    def discard(self) -> None:
        """Close and delete the partial file (or hand the slot back)."""
        try:
            if self._file is not None:
                self._file.close()
        finally:
            if self.path is None:
                pass  # held in memory only
            elif self._slots is not None:
                self._slots.give_back(self.path)
            else:
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass


class Spooled:
    """A message in hand (on disk at `path`, or only in memory when small): its header and where its body starts."""

    def __init__(self, path: Optional[Path], header: bytes, header_len: int, size: int, body_digest: str,
                 slots: Optional[SpoolSlots] = None, data: Optional[bytes] = None) -> None:
        self.path = path
        self._data = data  # the whole message, for a small one (MEMORY_COPY)
        self._slots = slots
        self.header = header
        self.header_len = header_len
        self.size = size
        self.body_digest = body_digest
        self.fields: List[Field] = parse_fields(header)
        self._dedup: Optional[str] = None
        self._message_id: Optional[str] = None

    @property
    def message_id(self) -> str:
        """The Message-ID as written (may be empty)."""
        if self._message_id is None:  # asked for several times per message
            self._message_id = (first(self.fields, "message-id") or "").strip()[:500]
        return self._message_id

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
        if self._data is not None:
            if len(self._data) > self.header_len:
                yield self._data[self.header_len:]
            return
        assert self.path is not None  # a message not held in memory is on disk
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
        self._data = None
        if self.path is None:
            return  # held in memory only
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
