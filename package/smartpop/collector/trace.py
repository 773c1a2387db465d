"""What a copy's envelope and trail entry take from the header, and the trace lines SmartPop adds to it.

Pure apart from the clock: the Received line carries the time of the hand-over.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

from smartpop import __version__
from smartpop.collector import headers, mailboxcheck, recipients

# Marks a copy sent again because an earlier hand-over of it ended in doubt.
REDELIVERED_HEADER = "X-SmartPop-Redelivered"
# X-SmartPop-Fallback lines one fallback copy carries at most: a list of thousands would
# outgrow Postfix's header_size_limit (100 KB), which cuts the header short.
FALLBACK_NOTES = 20


def return_path(fields: List[headers.Field]) -> str:
    """MAIL FROM from the topmost Return-Path; '' (null sender) when absent, broken or not a plain address."""
    value = headers.first(fields, "return-path")
    if value is None:
        return ""
    text = value.strip()
    if text.startswith("<") and ">" in text:
        text = text[1:text.index(">")]
    if text == "":
        return ""
    return mailboxcheck.normalise(text) or ""


def header_text(value: Optional[str]) -> str:
    """A header value unfolded and decoded (RFC 2047) for the trail, which escapes and bounds it."""
    # Only the start matters: the trail keeps a few hundred characters of a value that may be huge.
    return headers.decode_words(re.sub(r"\r?\n(?=[ \t])", "", (value or "")[:4000])).strip()


def address_in(value: str) -> str:
    """The address in a From value, for the trail's display: inside the last <...>, else the first word with '@'.

    Not email.utils.parseaddr: that cost a fifth of a millisecond per message in the throughput
    profile, for a field that is only shown and searched as text.
    """
    start = value.rfind("<")
    if start >= 0:
        end = value.find(">", start)
        if end > start:
            return value[start + 1:end].strip()
    for word in value.split():
        if "@" in word:
            return word.strip("<>()[],;:\"'")
    return ""


class TraceLines:
    """The lines one account run puts above each copy: Received, the loop marker, and why (doubt, fallback)."""

    def __init__(self, source_host: str, hostname: str, protocol: str, loop_key: bytes) -> None:
        # Per-message constants, made once: formatting showed in the throughput profile.
        self._received_from = headers.safe_header_text(source_host, 100)
        self._hostname = hostname
        self._protocol = protocol.upper()
        self._loop_key = loop_key
        self._date = (0, "")  # (second, RFC 5322 date of that second) for the Received line

    def _now(self) -> str:
        second = int(time.time())
        if self._date[0] != second:  # one date per second, not one per message
            self._date = (second, email.utils.formatdate(second, localtime=False, usegmt=True))
        return self._date[1]

    def lines(self, key: Sequence[str], fields: Sequence[headers.Field], rcpts: List[str],
              refused: Optional[Dict[str, str]], redelivered: bool = False) -> bytes:
        """Our Received trace line, the loop marker (bound to the Message-ID), and (for fallback copies) why."""
        ident = hashlib.sha256("/".join(key).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        date = self._now()
        received = (f"Received: from {self._received_from} by {self._hostname} (SmartPop {__version__})\r\n"
                    f"\twith {self._protocol} id {ident}")
        if len(rcpts) == 1:
            received += f"\r\n\tfor <{rcpts[0]}>"
        marker = recipients.loop_marker(self._loop_key, recipients.message_id_of(fields))
        lines = [received + f"; {date}", f"{headers.LOOP_HEADER}: {marker}"]
        if redelivered:
            lines.append(f"{REDELIVERED_HEADER}: possible duplicate; an earlier hand-over of this copy to MailPlus "
                         "was interrupted, so SmartPop cannot know whether it arrived")
        notes: List[Tuple[str, str]] = list((refused or {}).items())
        for rcpt, why in notes[:FALLBACK_NOTES]:
            lines.append(f"X-SmartPop-Fallback: {headers.safe_header_text(rcpt, 320)} refused: "
                         f"{headers.safe_header_text(why)}")
        if len(notes) > FALLBACK_NOTES:
            lines.append(f"X-SmartPop-Fallback: and {len(notes) - FALLBACK_NOTES} more recipients (see the log)")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")
