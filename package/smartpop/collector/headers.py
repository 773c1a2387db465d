"""Pure header handling on raw bytes: split, parse, decode, and the re-injection rewrite.

Everything works on bytes so that 8-bit, NUL-carrying or malformed headers never raise;
nothing here re-serialises a message through the `email` package (that changes bytes).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from typing import List, Match, NamedTuple, Optional, Sequence, Tuple

# A header field starts with a printable-ASCII name (no colon), optional obsolete WSP, then ':'.
_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_ENCODED_GAP = re.compile(r"(\?=)\s+(=\?)")
_UNFOLD = re.compile(rb"\r?\n(?=[ \t])")
# _FIELD_START for pattern.match(data, pos): '^' would only match at the start of `data`.
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_BLANKS = (0x20, 0x09)
_LINE_ENDS = (0x0D, 0x0A)
# A Delivered-To field's name (any case) at a line start, for rewrite_for_reinjection.
_DELIVERED_TO = re.compile(rb"^delivered-to(?=[ \t]*:)", re.IGNORECASE | re.MULTILINE)
# The empty line that ends a header block (lines end at LF; CRs before it do not count).
_EMPTY_LINE = re.compile(rb"^\r*(?:\n|\Z)", re.MULTILINE)

# The header our Delivered-To lines become: Postfix's local/pipe(D) delivery bounces a
# message whose Delivered-To already names the recipient ("mail forwarding loop").
RENAMED_DELIVERED_TO = b"X-Original-Delivered-To"
LOOP_HEADER = "X-SmartPop-Loop"


class Field(NamedTuple):
    """One header field: lower-cased name, its raw bytes (folded lines + EOL), unfolded value text."""

    name: str
    raw: bytes
    value: str


class HeaderScan:
    """Incremental finder of the end of the header block, fed line by line.

    The block ends at the first empty line (which belongs to the block) or at the first
    line that is neither a field nor a continuation (which belongs to the body: a message
    without the blank separator keeps its bytes as they are).
    """

    def __init__(self) -> None:
        self.done = False
        self._seen_field = False

    def feed_line(self, line: bytes) -> bool:
        """Return True if `line` (with its EOL) still belongs to the header block."""
        if self.done:
            return False
        stripped = line.rstrip(b"\r\n")
        if stripped == b"":
            self.done = True
            return True
        if stripped[:1] in (b" ", b"\t") and self._seen_field:
            return True
        if _FIELD_START.match(stripped):
            self._seen_field = True
            return True
        self.done = True
        return False


def lines(data: bytes) -> List[bytes]:
    """Split on LF only, keeping line ends (a bare CR inside a line is data, not a break)."""
    parts = data.split(b"\n")
    result = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        result.append(parts[-1])
    return result


def split_header(data: bytes) -> Tuple[bytes, bytes]:
    """Split a complete message into (header block, body) using HeaderScan's rules."""
    scan = HeaderScan()
    pos = 0
    for line in lines(data):
        if not scan.feed_line(line):
            break
        pos += len(line)
        if scan.done:
            break
    return data[:pos], data[pos:]


def _text(raw: bytes) -> str:
    """Bytes of a header as text: UTF-8 where valid, else Latin-1 (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_fields(header: bytes) -> List[Field]:
    """Parse a header block into fields, top to bottom; garbage lines are skipped."""
    # Offsets into `header` instead of a list of line copies: this runs once per collected
    # message, and the per-line copies and the regex on each of them showed in the profile.
    fields: List[Field] = []
    name: Optional[str] = None
    begin = start = 0  # where the current field's bytes and its value begin
    folded = False
    pos, size = 0, len(header)

    def flush(end: int) -> None:
        if name is not None:
            value = header[start:end]
            # Most fields are one line: unfold (a per-field regex) only what is folded.
            if folded:
                value = _UNFOLD.sub(b"", value)
            fields.append(Field(name, header[begin:end], _text(value.strip(b" \t\r\n"))))

    while pos < size:
        nl = header.find(b"\n", pos)
        end = size if nl < 0 else nl + 1
        lead = header[pos]
        if lead in _BLANKS and name is not None:
            folded = True  # a continuation line
            pos = end
            continue
        if lead in _LINE_ENDS and not header[pos:end].rstrip(b"\r\n"):
            break  # the empty line that ends the block
        match = _FIELD_NAME.match(header, pos, end)
        flush(pos)
        if match:
            name = match.group(1).decode("ascii").lower()
            begin, start, folded = pos, match.end(), False
        else:
            name = None
        pos = end
    flush(pos)
    return fields


def values(fields: Sequence[Field], name: str) -> List[str]:
    """All values of header `name` (case-insensitive), top to bottom."""
    wanted = name.lower()
    return [f.value for f in fields if f.name == wanted]


def first(fields: Sequence[Field], name: str) -> Optional[str]:
    """The topmost value of header `name`, or None."""
    wanted = name.lower()
    for f in fields:
        if f.name == wanted:
            return f.value
    return None


def _decode_word(match: Match[str]) -> str:
    charset, encoding, payload = match.group(1), match.group(2).upper(), match.group(3)
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        if encoding == "B":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            data = quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=True)
        return data.decode(charset, errors="replace")
    except (LookupError, binascii.Error, ValueError):
        return match.group(0)


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words; anything malformed is left as it was."""
    if "=?" not in text:
        return text
    return _ENCODED_WORD.sub(_decode_word, _ENCODED_GAP.sub(r"\1\2", text))


def rewrite_for_reinjection(header: bytes) -> bytes:
    """Rename every Delivered-To field; all other bytes stay exactly as they are."""
    # Two regex passes in C instead of a Python loop over the lines of every message.
    blank = _EMPTY_LINE.search(header)
    end = blank.start() if blank is not None else len(header)
    if _DELIVERED_TO.search(header, 0, end) is None:
        return header
    return _DELIVERED_TO.sub(RENAMED_DELIVERED_TO, header[:end]) + header[end:]


def safe_header_text(text: str, limit: int = 200) -> str:
    """Make untrusted text (a server reply, an address) safe as one header line value."""
    cleaned = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return cleaned[:limit]
