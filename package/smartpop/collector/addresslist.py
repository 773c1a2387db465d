"""Pure: the addresses a header value names (address lists, groups, comments, Received `for`).

Each address is taken whole, as written: a parser that kept only a plain-looking tail would
turn one user's address into another's. Whether an address is a plain mailbox is
`mailboxcheck`'s question; which header decides is `recipients`'.
"""

from __future__ import annotations

import re
from typing import List, Set

from smartpop.collector.headers import decode_words
from smartpop.collector.mailboxcheck import usable

_QUOTED_LOCAL = re.compile(r'"(?:[^"\\]|\\.)*"@[^\s,;<>()"]+')
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_RECEIVED_FOR = re.compile(r"\bfor\s+<?\s*([^\s<>;()]+@[^\s<>;()]+?)\s*>?(?=[\s;)]|$)",
                           re.IGNORECASE | re.ASCII)  # \s as in SMTP: a U+00A0 inside a name does not split it
_ASCII_SPACE = re.compile(r"[ \t\r\n]+")


def _strip_comments(text: str) -> str:
    """Remove (comments), honouring quoted strings and nesting."""
    out: List[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            out.append(ch)
            if ch == '"':
                quoted = False
            continue
        if ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _split_items(text: str) -> List[str]:
    """Split an address list on commas and group ends outside quotes and angle brackets."""
    items: List[str] = []
    current: List[str] = []
    quoted = False
    angle = 0
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">" and angle:
            angle -= 1
        if not quoted and angle == 0 and ch in ",;":
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    return items


def _candidate(item: str) -> str:
    """The one address an address-list item names, taken whole ('' if none)."""
    start, end = item.rfind("<"), item.rfind(">")
    if start != -1 and end > start:
        return item[start + 1:end].strip()
    quoted = _QUOTED_LOCAL.findall(item)
    if quoted:
        return str(quoted[-1])
    # A bare address is the whole whitespace-separated word that holds the '@': a pattern
    # that matched only its ASCII tail turned "rüben@" into "ben@", another user.
    # Words end only at ASCII whitespace: str.split() also splits at U+00A0, U+2028, U+3000 and
    # \x1c-\x1f, which turned "rü<U+00A0>ben@" into "ben@" too.
    words = [w for w in _ASCII_SPACE.split(_QUOTED.sub(" ", item)) if "@" in w]
    return words[-1] if words else ""


def candidates(value: str) -> List[str]:
    """Every address-like word of a header value, as written (RFC 2047 decoded, groups and comments handled)."""
    text = _strip_comments(decode_words(value))
    found: List[str] = []
    seen: Set[str] = set()  # lists of thousands of addresses: a list scan per item would be quadratic
    for raw_item in _split_items(text):
        # Group syntax "name: a@b, c@d;" leaves "name: a@b" as the first item.
        item = raw_item
        head, colon, rest = item.partition(":")
        if colon and "<" not in head and "@" not in head and '"' not in head:
            item = rest
        candidate = _candidate(item).rstrip(".")
        if candidate and candidate not in seen:
            seen.add(candidate)
            found.append(candidate)
    return found


def extract_addresses(value: str) -> List[str]:
    """Every plain address in a header value (the others are left out)."""
    return usable(candidates(value))[0]


def received_for(value: str) -> List[str]:
    """Addresses in a Received header's `for <...>` clause, as written."""
    found: List[str] = []
    for match in _RECEIVED_FOR.finditer(value):
        candidate = match.group(1).rstrip(".")
        if candidate not in found:
            found.append(candidate)
    return found
