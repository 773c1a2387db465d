"""Charts of collected mail for the overview: bucketing in local time, SQL aggregation, SVG."""

from __future__ import annotations

import math
import sqlite3
import time
from html import escape
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

# The charted series, bottom to top of a stacked bar, and the trail outcomes each one counts.
# 'duplicate' and 'consumed' are not charted: nothing new reached a mailbox or waits.
SERIES = ("delivered", "fallback", "waiting")
OUTCOME_SERIES = {"delivered": "delivered", "fallback": "fallback", "waiting": "waiting", "failed": "waiting"}
# Okabe-Ito blue and a darkened vermillion, and Paul Tol's wine: each has at least 4:1 contrast
# against white (WCAG 1.4.11 asks 3:1 for graphics), and the three stay apart for protanopes,
# deuteranopes and tritanopes (tests/trail/test_charts.py simulates it).
COLORS = {"delivered": "#0072B2", "fallback": "#C25E00", "waiting": "#882255"}
SPANS = {"hours": 24, "days": 30}
HOUR = 3600.0
DAY = 86400.0

Offset = Callable[[float], float]
Row = Tuple[float, str, int]


def local_offset(at: float) -> float:
    """Seconds east of UTC in the NAS's time zone at `at` (DSM sets it in Control Panel → Regional Options)."""
    return float(time.localtime(at).tm_gmtoff)


class Bucket(NamedTuple):
    """One bar: [start, end) in Unix time, its local start and end, and the counts per series."""

    start: float
    end: float
    local: Tuple[int, int, int, int, int]  # year, month, day, hour, minute at the start (local time)
    end_local: Tuple[int, int, int, int, int]
    delivered: int = 0
    fallback: int = 0
    waiting: int = 0

    @property
    def total(self) -> int:
        """All charted messages of the bucket."""
        return self.delivered + self.fallback + self.waiting

    def count(self, series: str) -> int:
        """The count of one series."""
        return int(getattr(self, series))

    def fields(self) -> Dict[str, int]:
        """The named values a catalog text may use: year, month, day, hour, minute, end_*, counts."""
        names = ("year", "month", "day", "hour", "minute")
        values = dict(zip(names, self.local))
        values.update(("end_" + name, value) for name, value in zip(names, self.end_local))
        values.update((series, self.count(series)) for series in SERIES)
        values["total"] = self.total
        return values


def _local(at: float, tz: Offset) -> Tuple[int, int, int, int, int]:
    moment = time.gmtime(at + tz(at))
    return moment.tm_year, moment.tm_mon, moment.tm_mday, moment.tm_hour, moment.tm_min


def hour_start(at: float, tz: Offset) -> float:
    """The start of the local clock hour holding `at`.

    Within one offset a local hour is a real hour, so the two 02:00 hours of an autumn DST
    change are two buckets and the missing 02:00 of spring is none."""
    shifted = at + tz(at)
    return shifted - shifted % HOUR - tz(at)


def _day_number(at: float, tz: Offset) -> int:
    return int((at + tz(at)) // DAY)


def day_start(at: float, tz: Offset) -> float:
    """The first instant of the local calendar day holding `at` (its midnight; 23 or 25 hours on DST days)."""
    day = _day_number(at, tz)
    # Midnight under the offset of `at` and of the candidates' own offsets: one of them is the
    # real midnight (the offset may change between midnight and `at`). Where a DST change skips
    # midnight itself, the day begins at the change, the later candidate.
    candidates = {day * DAY - tz(at)}
    for _ in range(2):
        candidates |= {day * DAY - tz(candidate) for candidate in candidates}
    inside = [candidate for candidate in candidates if candidate <= at and _day_number(candidate, tz) == day]
    return min(inside) if inside else at


def _floor(span: str) -> Callable[[float, Offset], float]:
    if span not in SPANS:
        raise ValueError(f"span must be one of {sorted(SPANS)}, not {span!r}")
    return hour_start if span == "hours" else day_start


def windows(now: float, span: str, tz: Offset = local_offset) -> List[Tuple[float, float]]:
    """The [start, end) of each bucket, oldest first: the 24 local hours or 30 local days up to `now`."""
    floor = _floor(span)
    current = floor(now, tz)
    # The current bucket's end: step forward until the floor moves (a 25-hour day is longer than a day).
    step = 900.0 if span == "hours" else HOUR
    probe = current + step
    while floor(probe, tz) == current:
        probe += step
    ends = [floor(probe, tz)]
    starts = [current]
    while len(starts) < SPANS[span]:
        ends.append(starts[-1])
        starts.append(floor(starts[-1] - 1, tz))
    return list(zip(reversed(starts), reversed(ends)))


def buckets(rows: Iterable[Row], now: float, span: str = "hours", tz: Offset = local_offset) -> List[Bucket]:
    """Count (at, outcome, count) rows into the buckets of `span` up to `now`; other rows are ignored.

    A row may be one trail row (count 1) or a pre-aggregated one whose `at` lies in its bucket."""
    spans = windows(now, span, tz)
    starts = [start for start, _ in spans]
    counts = [dict.fromkeys(SERIES, 0) for _ in spans]
    first, last = spans[0][0], spans[-1][1]
    for at, outcome, count in rows:
        series = OUTCOME_SERIES.get(outcome)
        if series is None or not first <= at < last:
            continue
        index = _bisect(starts, at)
        counts[index][series] += int(count)
    return [Bucket(start, end, _local(start, tz), _local(end, tz), **tally)
            for (start, end), tally in zip(spans, counts)]


def _bisect(starts: Sequence[float], at: float) -> int:
    low, high = 0, len(starts)
    while high - low > 1:
        middle = (low + high) // 2
        if starts[middle] <= at:
            low = middle
        else:
            high = middle
    return low


def read(db: Path, now: float, span: str = "hours", account: Optional[str] = None,
         tz: Offset = local_offset) -> List[Bucket]:
    """The buckets of `span` from the trail in the state database; no database or no trail table: all zero.

    One statement: per bucket (whose local-time bounds Python worked out) a range scan of the
    trail_at or trail_account_at index, grouped by outcome and tagged with the bucket's start. So
    100,000 rows come back as at most 120 rows; a CASE over all bounds per row took twice as long."""
    spans = windows(now, span, tz)
    where = "at >= ? AND at < ? AND outcome IN ('delivered', 'fallback', 'waiting', 'failed')"
    if account is not None:
        where += " AND account = ?"
    part = f"SELECT ? AS bucket, outcome, COUNT(*) FROM trail WHERE {where} GROUP BY outcome"  # noqa: S608 (constant text)
    sql = " UNION ALL ".join([part] * len(spans))
    args: List[object] = []
    for start, end in spans:
        args += [start, start, end] + ([account] if account is not None else [])
    rows: List[Row] = []
    try:
        # Read-only, and opened per overview only (the page script never reloads the charts): a
        # reader never writes the store the collector owns, and a missing file is not created.
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return buckets(rows, now, span, tz)
    try:
        rows = [(float(at), str(outcome), int(count)) for at, outcome, count in conn.execute(sql, args)]
    except sqlite3.Error:
        rows = []  # no trail table yet (a store from before the trail), or a store being replaced
    finally:
        conn.close()
    return buckets(rows, now, span, tz)


def when(bucket: Bucket, text: str) -> str:
    """A catalog text such as '{day}.{month}. {hour:02d}:00' filled with the bucket's fields."""
    return text.format(**bucket.fields())


def _nice_step(peak: int, ticks: int = 4) -> int:
    """A step of 1, 2 or 5 times a power of ten giving at most `ticks` steps up to `peak`."""
    raw = max(peak, 1) / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return int(factor * power)
    return int(10 * power)  # pragma: no cover (the loop always returns)


def _number(value: float) -> str:
    """A coordinate without a trailing '.0' (smaller SVG, stable text for tests)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def svg(buckets: Sequence[Bucket], labels: Mapping[str, str], width: int = 720,
        link: Optional[Callable[[Bucket, str], str]] = None) -> str:
    """A stacked bar chart as a standalone SVG document (every text and URL escaped here).

    `labels`: 'title', one name per series, 'tick' (x-axis text) and 'when' (a bar's time) as
    catalog texts with Bucket.fields(), and 'bar' (a bar's hover text with {when} and counts).
    `link(bucket, series)` gives a segment's URL; bars are plain without it."""
    height, top, bottom, left, right = 210, 30, 22, 40, 8
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((b.total for b in buckets), default=0)
    step = _nice_step(peak)
    ceiling = step * max(1, math.ceil(peak / step))
    scale = plot_h / ceiling
    slot = plot_w / max(len(buckets), 1)
    bar = max(1.0, slot * 0.72)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" font-size="11" role="group" aria-label="{escape(labels["title"])}">',
           f"<title>{escape(labels['title'])}</title>"]
    # Legend with the period's totals, so the figures are readable without hovering.
    x = float(left)
    for series in SERIES:
        name = f"{labels[series]}: {sum(b.count(series) for b in buckets)}"
        out.append(f'<rect x="{_number(x)}" y="6" width="11" height="11" fill="{COLORS[series]}"/>'
                   f'<text x="{_number(x + 15)}" y="15.5" fill="#1f2d3d">{escape(name)}</text>')
        x += 15 + 6.5 * len(name) + 20  # about 6.5 units per character at font-size 11
    # Horizontal grid lines with their values.
    for value in range(0, ceiling + 1, step):
        y = top + plot_h - value * scale
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{_number(y)}" y2="{_number(y)}" '
                   f'stroke="{"#8a97a6" if value == 0 else "#dde3ea"}" stroke-width="1"/>'
                   f'<text x="{left - 5}" y="{_number(y + 4)}" text-anchor="end" fill="#4d5b6b">{value}</text>')
    # Each bar: a group whose <title> is the hover text; an invisible full-height rectangle
    # lets the hover work over an empty or low bar too; segments link to their messages.
    every = max(1, math.ceil(len(buckets) * 44 / plot_w))  # x labels at least 44 units apart
    for index, bucket in enumerate(buckets):
        x = left + index * slot + (slot - bar) / 2
        hover = labels["bar"].format(when=when(bucket, labels["when"]), **{
            key: value for key, value in bucket.fields().items() if key in SERIES or key == "total"})
        out.append(f'<g class="bar"><title>{escape(hover)}</title>'
                   f'<rect x="{_number(left + index * slot)}" y="{top}" width="{_number(slot)}" '
                   f'height="{plot_h}" fill="#fff" fill-opacity="0"/>')
        y = float(top + plot_h)
        for series in SERIES:
            count = bucket.count(series)
            if not count:
                continue
            tall = count * scale
            y -= tall
            segment = (f'<rect x="{_number(x)}" y="{_number(y)}" width="{_number(bar)}" height="{_number(tall)}" '
                       f'fill="{COLORS[series]}" stroke="#fff" stroke-width="0.5"/>')
            if link is not None:
                segment = f'<a href="{escape(link(bucket, series))}">{segment}</a>'
            out.append(segment)
        out.append("</g>")
        if (len(buckets) - 1 - index) % every == 0:  # counted from the newest bar, which is always labelled
            out.append(f'<text x="{_number(left + (index + 0.5) * slot)}" y="{height - 6}" text-anchor="middle" '
                       f'fill="#4d5b6b">{escape(when(bucket, labels["tick"]))}</text>')
    out.append("</svg>")
    return "".join(out)
