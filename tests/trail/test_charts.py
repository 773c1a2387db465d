"""Charts of collected mail: local-time buckets (DST, borders), SQL aggregation, the SVG and its escaping."""

from __future__ import annotations

import calendar
import itertools
import math
import os
import random
import sqlite3
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from smartpop.trail import charts
from support.chartdata import add_trail

SVG = "{http://www.w3.org/2000/svg}"
# Europe/Berlin in 2025, written out: CEST (+2) from 30 March 01:00 UTC to 26 October 01:00 UTC.
SPRING = calendar.timegm((2025, 3, 30, 1, 0, 0))
AUTUMN = calendar.timegm((2025, 10, 26, 1, 0, 0))


def berlin(at: float) -> float:
    """The UTC offset of Europe/Berlin in 2025 (a tz offset function, independent of the machine's tzdata)."""
    return 7200.0 if SPRING <= at < AUTUMN else 3600.0


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
          summer: bool = False) -> float:
    """Unix time of a Berlin wall-clock time (summer: CEST, else CET)."""
    return calendar.timegm((year, month, day, hour, minute, second)) - (7200 if summer else 3600)


def rows(*items: Tuple[float, str]) -> List[Tuple[float, str, int]]:
    return [(at, outcome, 1) for at, outcome in items]


@pytest.fixture
def tz_berlin() -> Iterator[None]:
    """The process time zone set to Europe/Berlin (what DSM's regional options do), restored afterwards."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_hours_around_midnight_and_on_bucket_borders() -> None:
    now = local(2025, 6, 15, 0, 30, summer=True)
    found = charts.buckets(rows(
        (local(2025, 6, 15, 0, 0, summer=True), "delivered"),      # exactly on the border: the new hour
        (local(2025, 6, 14, 23, 59, 59, summer=True), "fallback"),  # the second before: the old hour
        (local(2025, 6, 14, 1, 0, summer=True), "delivered"),       # the first bucket's start: counted
        (local(2025, 6, 14, 0, 59, 59, summer=True), "delivered"),  # before the first bucket: not counted
        (local(2025, 6, 15, 1, 0, summer=True), "delivered"),       # after the last bucket: not counted
    ), now, "hours", berlin)
    assert len(found) == 24
    assert [b.local[3] for b in found] == [*range(1, 24), 0]
    assert found[-1].local[:3] == (2025, 6, 15) and found[-2].local[:3] == (2025, 6, 14)
    assert (found[-1].delivered, found[-1].fallback) == (1, 0)
    assert (found[-2].delivered, found[-2].fallback) == (0, 1)
    assert found[0].delivered == 1
    assert sum(b.total for b in found) == 3
    assert all(b.end - b.start == 3600 for b in found)
    assert all(earlier.end == later.start for earlier, later in zip(found, found[1:]))


def test_outcomes_map_to_three_series() -> None:
    now = local(2025, 6, 15, 12, summer=True)
    at = local(2025, 6, 15, 11, 10, summer=True)
    found = charts.buckets(rows((at, "delivered"), (at, "fallback"), (at, "waiting"), (at, "failed"),
                                (at, "duplicate"), (at, "consumed")), now, "hours", berlin)
    assert (found[-2].delivered, found[-2].fallback, found[-2].waiting, found[-2].total) == (1, 1, 2, 4)


def test_spring_forward_day_has_23_hours() -> None:
    now = local(2025, 3, 30, 23, 30, summer=True)
    days = charts.buckets([], now, "days", berlin)
    assert len(days) == 30
    assert days[-1].end - days[-1].start == 23 * 3600
    assert days[-1].local == (2025, 3, 30, 0, 0) and days[-1].end_local == (2025, 3, 31, 0, 0)
    assert days[-2].end - days[-2].start == 24 * 3600
    hours = charts.buckets(rows(
        (SPRING - 1, "delivered"),  # 01:59:59 CET
        (SPRING, "fallback"),       # 03:00:00 CEST, one second later
    ), now, "hours", berlin)
    # 24 buckets back from 23:00 on a 23-hour day reach 23:00 of the day before; no 02:00.
    assert [b.local[3] for b in hours] == [23, 0, 1, *range(3, 24)]
    assert hours[0].local[:3] == (2025, 3, 29)
    assert all(b.end - b.start == 3600 for b in hours)
    one, three = hours[2], hours[3]
    assert (one.local[3], one.delivered, one.end_local[3]) == (1, 1, 3)
    assert (three.local[3], three.fallback) == (3, 1)


def test_fall_back_day_has_25_hours_and_two_two_oclocks() -> None:
    now = local(2025, 10, 26, 23, 30)
    days = charts.buckets([(local(2025, 10, 26, 0, 0, summer=True), "delivered", 1),   # midnight, CEST
                           (local(2025, 10, 27, 0, 0), "delivered", 1)],                 # the next midnight
                          now, "days", berlin)
    assert days[-1].end - days[-1].start == 25 * 3600
    assert days[-1].start == local(2025, 10, 26, summer=True)
    assert days[-1].delivered == 1  # the next day's midnight is outside (now is before it)
    assert days[-2].local[:3] == (2025, 10, 25) and days[-2].delivered == 0
    first_two = AUTUMN - 1800   # 02:30 CEST
    second_two = AUTUMN + 1800  # 02:30 CET, an hour later
    hours = charts.buckets(rows((first_two, "delivered"), (second_two, "waiting")), now, "hours", berlin)
    twos = [b for b in hours if b.local[3] == 2]
    assert len(twos) == 2 and twos[0].end == twos[1].start == AUTUMN
    assert (twos[0].delivered, twos[0].waiting, twos[1].delivered, twos[1].waiting) == (1, 0, 0, 1)
    assert [b.local[3] for b in hours] == [0, 1, 2, 2, *range(3, 24)][-24:]


def test_thirty_days_are_local_calendar_days() -> None:
    now = local(2025, 7, 31, 9, summer=True)
    days = charts.buckets(rows((local(2025, 7, 2, summer=True), "delivered"),       # first day's midnight
                               (local(2025, 7, 1, 23, 59, 59, summer=True), "fallback")),  # before it
                          now, "days", berlin)
    assert days[0].local == (2025, 7, 2, 0, 0) and days[-1].local == (2025, 7, 31, 0, 0)
    assert all(b.local[3:] == (0, 0) for b in days)
    assert days[0].delivered == 1 and sum(b.fallback for b in days) == 0
    for earlier, later in zip(days, days[1:]):
        assert earlier.end == later.start


def test_process_time_zone_europe_berlin(tz_berlin: None) -> None:
    """The default offset function follows the NAS's zone (TZ / tzset), DST days included."""
    spring_noon = time.mktime((2025, 3, 30, 12, 0, 0, 0, 0, -1))
    autumn_noon = time.mktime((2025, 10, 26, 12, 0, 0, 0, 0, -1))
    assert charts.windows(spring_noon, "days")[-1] == (local(2025, 3, 30), local(2025, 3, 31, summer=True))
    start, end = charts.windows(autumn_noon, "days")[-1]
    assert end - start == 25 * 3600 and time.localtime(start)[3:6] == (0, 0, 0)
    assert charts.buckets(rows((AUTUMN - 1, "delivered")), autumn_noon, "days")[-1].delivered == 1


def test_a_half_hour_zone_buckets_on_local_hours() -> None:
    india = lambda at: 19800.0  # noqa: E731 (UTC+5:30, no DST)
    now = calendar.timegm((2025, 6, 15, 6, 45, 0))  # 12:15 in India
    hours = charts.buckets([], now, "hours", india)
    assert hours[-1].local[3:] == (12, 0) and hours[-1].start == calendar.timegm((2025, 6, 15, 6, 30, 0))


def _labels(**extra: str) -> dict:
    labels = {"title": "Last 24 hours", "delivered": "Delivered", "fallback": "To fallback",
              "waiting": "Waiting/failed", "tick": "{hour:02d}:00",
              "when": "{day}.{month}. {hour:02d}:{minute:02d}-{end_hour:02d}:{end_minute:02d}",
              "bar": "{when}: {total} in total; {delivered} delivered, {fallback} to fallback, {waiting} waiting"}
    labels.update(extra)
    return labels


def test_svg_is_valid_xml_with_numbers_in_titles() -> None:
    now = local(2025, 6, 15, 12, 30, summer=True)
    at = local(2025, 6, 15, 10, 5, summer=True)
    found = charts.buckets(rows(*[(at, "delivered")] * 7, (at, "fallback"), (at, "failed"), (at, "waiting")),
                           now, "hours", berlin)
    text = charts.svg(found, _labels(), 720, link=lambda b, s: f"/trail?outcome={s}&since={int(b.start)}")
    root = ET.fromstring(text)
    assert root.tag == SVG + "svg" and root.get("viewBox") == "0 0 720 210"
    bars = root.findall(f"{SVG}g[@class='bar']")
    assert len(bars) == 24
    titles = [bar.find(SVG + "title").text for bar in bars]
    assert titles[-3] == "15.6. 10:00-11:00: 10 in total; 7 delivered, 1 to fallback, 2 waiting"
    assert titles[-1] == "15.6. 12:00-13:00: 0 in total; 0 delivered, 0 to fallback, 0 waiting"
    links = bars[-3].findall(SVG + "a")
    assert [a.get("href") for a in links] == [f"/trail?outcome={s}&since={int(found[-3].start)}"
                                              for s in ("delivered", "fallback", "waiting")]
    heights = [float(a.find(SVG + "rect").get("height")) for a in links]
    assert heights[0] == pytest.approx(7 * heights[1]) and heights[2] == pytest.approx(2 * heights[1])
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "Delivered: 7" in texts and "To fallback: 1" in texts and "Waiting/failed: 2" in texts
    assert "10:00" in texts  # an x tick
    assert {"0", "5", "10"} <= set(texts)  # y ticks up to the peak


def test_svg_of_an_empty_period_is_valid() -> None:
    found = charts.buckets([], local(2025, 6, 15, 12, summer=True), "days", berlin)
    root = ET.fromstring(charts.svg(found, _labels(tick="{day}.{month}.", when="{day}.{month}.{year}")))
    assert len(root.findall(f"{SVG}g[@class='bar']")) == 30
    assert root.findall(f".//{SVG}a") == []


def test_svg_escapes_names_labels_and_links() -> None:
    hostile = "<script>alert('x')</script>\"&"
    now = local(2025, 6, 15, 12, 30, summer=True)
    found = charts.buckets(rows((now - 60, "delivered")), now, "hours", berlin)
    href = f"/trail?outcome=delivered&account={hostile}"
    text = charts.svg(found, _labels(title=hostile, delivered=hostile, tick=hostile + "{hour}",
                                     bar=hostile + " {when} {total}"), link=lambda b, s: href)
    assert "<script" not in text and "alert('x')" not in text
    root = ET.fromstring(text)
    assert root.find(SVG + "title").text == hostile
    assert root.get("aria-label") == hostile
    assert root.find(f".//{SVG}a").get("href") == href
    assert f"{hostile}: 1" in [t.text for t in root.iter(SVG + "text")]
    assert root.findall(f"{SVG}g[@class='bar']")[-1].find(SVG + "title").text.startswith(hostile + " 15.6.")


def _linear(channel: int) -> float:
    value = channel / 255
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def _rgb(color: str) -> List[float]:
    return [_linear(int(color[i:i + 2], 16)) for i in (1, 3, 5)]


def _lab(rgb: List[float]) -> Tuple[float, float, float]:
    r, g, b = (min(1.0, max(0.0, c)) for c in rgb)
    x = 0.4124 * r + 0.3576 * g + 0.1805 * b
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = 0.0193 * r + 0.1192 * g + 0.9505 * b
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x / 0.95047, y, z / 1.08883)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


# Machado, Oliveira & Fernandes (2009), full severity, on linear RGB.
DEFICIENCIES = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
}


def test_colors_have_contrast_and_survive_red_green_color_blindness() -> None:
    for color in charts.COLORS.values():
        luminance = sum(w * c for w, c in zip((0.2126, 0.7152, 0.0722), _rgb(color)))
        assert (1.05) / (luminance + 0.05) >= 3.0, color  # WCAG 1.4.11 against the white card
    for matrix in DEFICIENCIES.values():
        for a, b in itertools.combinations(charts.COLORS.values(), 2):
            seen = [_lab([sum(m * c for m, c in zip(row, _rgb(color))) for row in matrix]) for color in (a, b)]
            assert math.dist(*seen) > 25, (a, b)  # CIE76 ΔE: clearly different colours


def test_read_without_database_or_trail_table_is_all_zero(tmp_path: Path) -> None:
    now = time.time()
    assert sum(b.total for b in charts.read(tmp_path / "missing.sqlite3", now)) == 0
    assert not (tmp_path / "missing.sqlite3").exists()
    db = tmp_path / "state.sqlite3"
    sqlite3.connect(str(db)).execute("CREATE TABLE messages (x)").connection.close()
    assert [b.total for b in charts.read(db, now, "days")] == [0] * 30


def test_aggregation_over_100000_rows(tmp_path: Path) -> None:
    """SQL GROUP BY per bucket gives the same counts as bucketing every row in Python."""
    now = local(2025, 10, 27, 9, 17)  # the window holds the 25-hour day
    generator = random.Random(16)
    outcomes = ["delivered"] * 6 + ["fallback", "waiting", "failed", "duplicate", "consumed"]
    accounts = ["sammelpostfach", "anna", "ben"]
    raw = [(now - generator.uniform(0, 32 * 86400), generator.choice(accounts), generator.choice(outcomes))
           for _ in range(100_000)]
    db = tmp_path / "state.sqlite3"
    add_trail(db, sorted(raw))  # the collector appends in time order
    for span in ("hours", "days"):
        started = time.perf_counter()
        total = charts.read(db, now, span, tz=berlin)
        elapsed = time.perf_counter() - started
        print(f"read {span} over 100,000 rows: {elapsed * 1000:.1f} ms")
        assert total == charts.buckets([(at, outcome, 1) for at, _, outcome in raw], now, span, berlin)
        ben = charts.read(db, now, span, "ben", berlin)
        assert ben == charts.buckets([(at, outcome, 1) for at, who, outcome in raw if who == "ben"], now, span, berlin)
        assert 0 < sum(b.total for b in ben) < sum(b.total for b in total)
    days = charts.read(db, now, "days", tz=berlin)
    assert sum(b.total for b in days) > 70_000  # most rows lie in the 30 days and are charted
