"""Searching the mail trail, read-only: the Trail page, its CSV export and `smartpop trail` (docs/TRAIL.md).

Every query runs on a connection of its own opened with mode=ro, so a search never writes to
the store (no WAL of its own, no lock that a collector's commit would wait for) and never
changes what the collector committed. Filters that name a time or an account use the trail's
indexes; a sender or recipient filter is a substring match (case-insensitive for ASCII),
which scans at most the rows of the time range: 100,000 rows take well under a second
(bench/trail.py).
"""

from __future__ import annotations

import datetime
import logging
import re
import sqlite3
import time
import urllib.parse
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from smartpop.collector import statusread
from smartpop.errors import StateError, UsageError
from smartpop.paths import Paths
from smartpop.trail.record import OUTCOMES

log = logging.getLogger(__name__)

# Rows one search returns at most (a page, the CLI's --limit); the CSV export streams them all.
MAX_LIMIT = 10000
# Ids per "IN (...)" of the copies query: SQLite before 3.32 (DSM 7's Python 3.8) allows 999 variables.
_CHUNK = 500
_COLUMNS = ("id", "at", "account", "folder", "uid", "message_id", "sender", "from_addr", "subject", "rule", "detail",
            "size", "outcome", "redelivered")
# Queries are put together from these constants and "?" placeholders only (hence the noqa: S608);
# every value a user typed is a parameter.
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM trail"  # noqa: S608
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^(\d{1,6})\s*(m|min|h|d|w)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPACE_OFFSET = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:\d{2})$")

Source = Union[Paths, Path, str]


@dataclass
class Filters:
    """What a search asks for; empty fields do not filter."""

    since: Optional[float] = None  # unix time, inclusive
    until: Optional[float] = None  # unix time, exclusive
    sender: str = ""  # part of the envelope sender or the From address
    rcpt: str = ""  # part of a copy's recipient
    message_id: str = ""  # the Message-ID, with or without <>
    account: str = ""
    outcome: Tuple[str, ...] = ()  # any of these outcomes

    def where(self) -> Tuple[str, List[Any]]:
        """The WHERE clause (or '') and its parameters."""
        terms: List[str] = []
        args: List[Any] = []
        if self.since is not None:
            terms.append("at >= ?")
            args.append(self.since)
        if self.until is not None:
            terms.append("at < ?")
            args.append(self.until)
        if self.account:
            terms.append("account = ?")
            args.append(self.account)
        if self.outcome:
            terms.append("outcome IN (" + ",".join("?" * len(self.outcome)) + ")")
            args.extend(self.outcome)
        if self.message_id:
            bare = self.message_id.strip().strip("<>").strip()
            terms.append("message_id IN (?, ?)")
            args.extend([f"<{bare}>", bare])
        if self.sender:
            terms.append("(sender LIKE ? ESCAPE '\\' OR from_addr LIKE ? ESCAPE '\\')")
            args.extend([_like(self.sender)] * 2)
        if self.rcpt:
            terms.append("id IN (SELECT trail_id FROM trail_copies WHERE rcpt LIKE ? ESCAPE '\\')")
            args.append(_like(self.rcpt))
        return (" WHERE " + " AND ".join(terms)) if terms else "", args

    def query_args(self) -> Dict[str, str]:
        """The filters as URL parameters (the page's links, the CSV link); times as unix seconds."""
        values = {"since": _stamp(self.since), "until": _stamp(self.until), "sender": self.sender,
                  "rcpt": self.rcpt, "message_id": self.message_id, "account": self.account,
                  "outcome": ",".join(self.outcome)}
        return {k: v for k, v in values.items() if v}


def _stamp(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.0f}" if value == int(value) else f"{value:.3f}"


def _like(text: str) -> str:
    """A LIKE pattern that finds `text` anywhere, its own % and _ taken literally."""
    escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def parse_time(text: str, now: Optional[float] = None, end_of_day: bool = False) -> Optional[float]:
    """A time as the filters take it: '2h', '3d', '30m', '1w' ago, 'today', an ISO date or time, or unix seconds.

    A bare date is local midnight; with `end_of_day` (an "until") it is the midnight after, so
    "until 2026-03-01" includes that day. A time without a zone is local time. Raises UsageError.
    """
    value = (text or "").strip()
    if not value:
        return None
    now = time.time() if now is None else now
    lowered = value.lower()
    match = _RELATIVE.match(lowered)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    if lowered in ("today", "yesterday"):
        midnight = datetime.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if lowered == "yesterday":
            midnight -= datetime.timedelta(days=1)
        if end_of_day:
            midnight += datetime.timedelta(days=1)
        return midnight.timestamp()
    if re.match(r"^\d{6,12}(\.\d+)?$", value):
        return float(value)
    try:
        if _DATE.match(value):
            day = datetime.datetime.strptime(value, "%Y-%m-%d")
            if end_of_day:
                day += datetime.timedelta(days=1)
            return day.timestamp()
        # A "+01:00" offset in a URL that was not percent-encoded arrives as " 01:00".
        iso = _SPACE_OFFSET.sub(r"\1+\2", value)
        # Python 3.8's fromisoformat knows neither "Z" nor a blank-free offset like "+0100".
        iso = iso.replace(" ", "T", 1)
        if iso.endswith(("Z", "z")):
            iso = iso[:-1] + "+00:00"
        return datetime.datetime.fromisoformat(iso).timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    raise UsageError(f"{value!r} is not a time: use e.g. 2h, 3d, today, 2026-03-01, 2026-03-01T14:30 "
                     "or unix seconds")


def parse_filters(values: Mapping[str, str], now: Optional[float] = None) -> Tuple[Filters, Dict[str, str]]:
    """Filters from text values (URL parameters, CLI options): (filters, {field: error}) for the bad ones."""
    errors: Dict[str, str] = {}
    times: Dict[str, Optional[float]] = {}
    for name in ("since", "until"):
        try:
            times[name] = parse_time(values.get(name, "") or "", now, end_of_day=name == "until")
        except UsageError as exc:
            errors[name] = str(exc)
            times[name] = None
    outcomes = tuple(o for o in re.split(r"[,\s]+", (values.get("outcome", "") or "").strip().lower()) if o)
    unknown = [o for o in outcomes if o not in OUTCOMES]
    if unknown:
        errors["outcome"] = f"unknown outcome {unknown[0]!r}: use one of {', '.join(OUTCOMES)}"
        outcomes = tuple(o for o in outcomes if o in OUTCOMES)

    def text(name: str, limit: int = 500) -> str:
        return (values.get(name, "") or "").strip()[:limit]

    return Filters(since=times["since"], until=times["until"], sender=text("sender"), rcpt=text("rcpt"),
                   message_id=text("message_id", 1000), account=text("account", 200), outcome=outcomes), errors


def _db(source: Source) -> Path:
    return source.state_db if isinstance(source, Paths) else Path(source)


def _connect(db: Path) -> Optional[sqlite3.Connection]:
    """A read-only connection, or None when there is no store yet (nothing collected)."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(db))}?mode=ro", uri=True, timeout=10,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise StateError(f"state store {db} cannot be read: {exc}") from exc
    return conn


def _rows(conn: sqlite3.Connection, raw: Sequence[Sequence[Any]]) -> List[Dict[str, Any]]:
    """Rows as dicts, each with its copies."""
    rows = [dict(zip(_COLUMNS, r)) for r in raw]
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        row["copies"] = []
        row["redelivered"] = bool(row["redelivered"])
    ids = list(by_id)
    for start in range(0, len(ids), _CHUNK):
        part = ids[start:start + _CHUNK]
        marks = ",".join("?" * len(part))
        cursor = conn.execute(f"SELECT trail_id, rcpt, placement, reply FROM trail_copies WHERE trail_id IN ({marks})"  # noqa: S608
                              " ORDER BY rowid", part)
        for trail_id, rcpt, placement, reply in cursor:
            by_id[trail_id]["copies"].append({"rcpt": rcpt, "placement": placement, "reply": reply})
    return rows


def _missing_table(exc: sqlite3.Error) -> bool:
    # A store that no collector of this version opened yet has no trail: that is an empty trail.
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


def search(source: Source, filters: Filters, limit: int = 100, offset: int = 0) -> Tuple[List[Dict[str, Any]], int]:
    """The newest rows matching `filters` (each with its copies), and how many match in all."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    offset = max(0, int(offset))
    db = _db(source)
    conn = _connect(db)
    if conn is None:
        return [], 0
    where, args = filters.where()
    with closing(conn):
        try:
            total = conn.execute("SELECT COUNT(*) FROM trail" + where, args).fetchone()[0]  # noqa: S608
            raw = conn.execute(_SELECT + where + " ORDER BY at DESC, id DESC LIMIT ? OFFSET ?",
                               [*args, limit, offset]).fetchall()
            return _rows(conn, raw), int(total)
        except sqlite3.Error as exc:
            if _missing_table(exc):
                return [], 0
            raise StateError(f"state store {db} cannot be read: {exc}") from exc


def each(source: Source, filters: Filters, chunk: int = _CHUNK) -> Iterator[Dict[str, Any]]:
    """Every row matching `filters`, newest first, read a chunk at a time (the CSV export streams these)."""
    db = _db(source)
    conn = _connect(db)
    if conn is None:
        return
    where, args = filters.where()
    with closing(conn):
        try:
            cursor = conn.execute(_SELECT + where + " ORDER BY at DESC, id DESC", args)
            while True:
                raw = cursor.fetchmany(chunk)
                if not raw:
                    return
                # A second cursor on the same connection reads the copies while the first stays open.
                yield from _rows(conn, raw)
        except sqlite3.Error as exc:
            if _missing_table(exc):
                return
            raise StateError(f"state store {db} cannot be read: {exc}") from exc


def detail(source: Source, trail_id: int) -> Optional[Dict[str, Any]]:
    """One message's row with all its copies, or None."""
    db = _db(source)
    conn = _connect(db)
    if conn is None:
        return None
    with closing(conn):
        try:
            raw = conn.execute(_SELECT + " WHERE id = ?", (int(trail_id),)).fetchall()
            rows = _rows(conn, raw)
        except sqlite3.Error as exc:
            if _missing_table(exc):
                return None
            raise StateError(f"state store {db} cannot be read: {exc}") from exc
    return rows[0] if rows else None


def counts(source: Source, since: float) -> Dict[str, Dict[str, int]]:
    """{account: {outcome: messages}} recorded since `since` (the overview's links into the search).

    The overview asks every 15 s while it is open: this read uses the connection the status
    reads keep open (statusread.read_kept), because opening one is a write to the store's files.
    """
    db = _db(source)
    if not db.exists():
        return {}
    result: Dict[str, Dict[str, int]] = {}
    try:
        rows = statusread.read_kept(db, lambda conn: conn.execute(
            "SELECT account, outcome, COUNT(*) FROM trail WHERE at >= ? GROUP BY account, outcome",
            (since,)).fetchall())
    except sqlite3.Error as exc:
        if _missing_table(exc):
            return {}
        raise StateError(f"state store {db} cannot be read: {exc}") from exc
    except OSError as exc:  # the store was replaced between the check and the read
        raise StateError(f"state store {db} cannot be read: {exc}") from exc
    for account, outcome, number in rows:
        result.setdefault(account, {})[outcome] = number
    return result


def local_time(at: float) -> str:
    """`at` as local 'YYYY-MM-DD HH:MM:SS' (the NAS's time zone, as in the log)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def iso_time(at: float) -> str:
    """`at` as ISO 8601 with the local offset (CSV, JSON): unambiguous and readable."""
    return datetime.datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")

