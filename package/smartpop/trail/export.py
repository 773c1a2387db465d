"""The CSV export of a trail search: one line per message, streamed, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any, Dict, Iterable, Iterator, List

from smartpop.log import escape_controls
from smartpop.trail.query import iso_time

log = logging.getLogger(__name__)

HEADER = ["time", "account", "folder", "uid", "message_id", "sender", "from", "subject", "rule", "detail", "size",
          "outcome", "redelivered", "copies"]
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection); a leading
# quote makes it text. Tab and CR are on OWASP's list too (stored text has them escaped anyway).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
# Excel takes a CSV for UTF-8 only with a byte order mark; other readers skip it.
BOM = "\ufeff"


def cell(value: Any) -> str:
    """One CSV cell: on one line, and never a formula."""
    text = "" if value is None else escape_controls(str(value))
    if text.startswith(_FORMULA):
        return "'" + text
    return text


def copies_text(copies: Iterable[Dict[str, Any]]) -> str:
    """The copies of one message in one cell: 'rcpt placement: reply; ...'."""
    return "; ".join(f"{c['rcpt']} {c['placement']}" + (f": {c['reply']}" if c["reply"] else "") for c in copies)


def line(row: Dict[str, Any]) -> List[str]:
    """The cells of one trail row."""
    values = [iso_time(row["at"]), row["account"], row["folder"], row["uid"], row["message_id"], row["sender"],
              row["from_addr"], row["subject"], row["rule"], row["detail"], row["size"], row["outcome"],
              "yes" if row["redelivered"] else "", copies_text(row["copies"])]
    return [cell(v) for v in values]


def lines(rows: Iterable[Dict[str, Any]]) -> Iterator[str]:
    """The CSV text (BOM and header first), a line at a time, so a long export is never held in memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(HEADER)
    yield BOM + take()
    for row in rows:
        writer.writerow(line(row))
        yield take()
