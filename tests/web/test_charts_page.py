"""The overview's charts of collected mail: SVG and table per period, per account, links to the trail, de/en."""

from __future__ import annotations

import html
import re
import time
import xml.etree.ElementTree as ET
from typing import Iterator, List, Tuple

import pytest
from selenium.webdriver.support.ui import Select
from webrig import Browserless, Rig

from support.browser import chromium, screenshot_dir
from support.chartdata import add_trail
from support.samples import sample_document

SVG = "{http://www.w3.org/2000/svg}"


def _document() -> dict:
    document = sample_document()
    second = dict(document["accounts"][0], name="anna", username="anna@firma.de")
    document["accounts"].append(second)
    return document


@pytest.fixture
def chart_rig() -> Iterator[Rig]:
    """Two accounts and a day and a month of trail rows in the state database."""
    environment = Rig(_document())
    now = time.time()
    rows: List[Tuple[float, str, str]] = []
    for hours_ago, count in ((0.2, 3), (1.5, 7), (2.5, 12), (5.5, 4), (9.5, 9), (13.5, 2), (20.5, 6)):
        rows += [(now - hours_ago * 3600, "sammelpostfach", "delivered")] * count
    rows += [(now - 1.5 * 3600, "sammelpostfach", "fallback")] * 2 + [(now - 2.5 * 3600, "anna", "failed")]
    rows += [(now - 9.5 * 3600, "anna", "delivered")] * 5 + [(now - 9.5 * 3600, "anna", "waiting")] * 2
    rows += [(now - 0.2 * 3600, "anna", "duplicate")] * 4  # not charted
    for day in range(2, 29):
        rows += [(now - day * 86400, "sammelpostfach", "delivered")] * (10 + day % 7 * 3)
        rows += [(now - day * 86400, "anna", "fallback")] * (day % 3)
        rows += [(now - day * 86400 - 3600, "anna", "waiting")] * (1 if day % 5 == 0 else 0)
    add_trail(environment.paths.state_db, rows)
    yield environment
    environment.stop()


def _svgs(page: str) -> List[ET.Element]:
    return [ET.fromstring(found) for found in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def _titles(svg: ET.Element) -> List[str]:
    return [str(bar.find(SVG + "title").text) for bar in svg.findall(f"{SVG}g[@class='bar']")]


def test_overview_shows_both_periods_with_tables_and_trail_links(chart_rig: Rig) -> None:
    admin = Browserless(chart_rig, "admin")
    page = admin.get("/").text
    hours, days = _svgs(page)
    assert len(_titles(hours)) == 24 and len(_titles(days)) == 30
    texts = [t.text for t in hours.iter(SVG + "text")]
    assert "Delivered: 48" in texts and "To fallback: 2" in texts and "Waiting/failed: 3" in texts
    assert any("12 in total; 12 delivered" in title or "13 in total; 12 delivered" in title for title in _titles(hours))
    # Every segment links to the trail search with its outcome and the bucket's bounds.
    hrefs = [a.get("href") for a in hours.iter(SVG + "a")]
    shape = (r"/webman/3rdparty/SmartPop/index\.cgi/trail\?outcome=(delivered|fallback|waiting%2Cfailed)"
             r"&since=\d+&until=\d+(&SynoToken=[\w-]+)?")
    assert hrefs and all(re.fullmatch(shape, str(h)) for h in hrefs)
    # The "waiting" series is the trail's waiting and failed rows: its links ask for both.
    assert {re.search(r"outcome=([\w%]+)", str(h)).group(1) for h in hrefs} == {"delivered", "fallback",
                                                                                 "waiting%2Cfailed"}
    since, until = (int(v) for v in re.search(r"since=(\d+)&until=(\d+)", str(hrefs[0])).groups())
    assert until - since == 3600
    # The tables hold the same figures, with links per count.
    assert page.count('<details class="chart-table">') == 2
    assert html.escape("/trail?outcome=fallback&since=", quote=True) in page
    assert "Figures as a table" in page and "Last 24 hours" in page and "Last 30 days" in page


def test_one_account_and_a_hostile_selection(chart_rig: Rig) -> None:
    admin = Browserless(chart_rig, "admin")
    page = admin.get("/?chart_account=anna").text
    hours, _days = _svgs(page)
    texts = [t.text for t in hours.iter(SVG + "text")]
    assert "Delivered: 5" in texts and "To fallback: 0" in texts and "Waiting/failed: 3" in texts
    assert all(str(a.get("href")).split("&SynoToken")[0].endswith("&account=anna") for a in hours.iter(SVG + "a"))
    assert '<option value="anna" selected>' in page
    hostile = "<script>alert(\"x\")</script>'"
    page = admin.get("/", params={"chart_account": hostile}).text
    assert "<script>alert" not in page and "alert(&#34;x&#34;)" not in page  # not echoed at all
    hours, _days = _svgs(page)
    assert "Delivered: 48" in [t.text for t in hours.iter(SVG + "text")]  # unknown names show all accounts


def test_no_trail_yet_and_german(rig: Rig, admin: Browserless) -> None:
    page = admin.get("/").text
    assert page.count("No mail in this period.") == 2
    assert all(not list(svg.iter(SVG + "a")) for svg in _svgs(page))
    page = admin.get("/", headers={"Accept-Language": "de"}).text
    assert "Letzte 24 Stunden" in page and "Letzte 30 Tage" in page and "Zahlen als Tabelle" in page
    hours, days = _svgs(page)
    assert "Zugestellt: 0" in [t.text for t in hours.iter(SVG + "text")]
    german = r"\d+\.\d+\.\d{4}: 0 insgesamt; 0 zugestellt, 0 an Sammeladresse, 0 wartend oder fehlgeschlagen"
    assert re.fullmatch(german, _titles(days)[-1])


@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "de"])
def test_charts_in_the_browser_at_800_px(chart_rig: Rig, lang: str) -> None:
    with chromium(lang=lang) as browser:
        browser.viewport(800, 700)
        browser.login(chart_rig)
        assert not browser.overflows()
        chart = browser.el("#chart-hours svg")
        assert chart.is_displayed() and 600 <= chart.size["width"] <= 750
        heading = browser.text("#chart-hours h3")
        assert heading == {"en": "Last 24 hours", "de": "Letzte 24 Stunden"}[lang]
        bars = browser.driver.find_elements("css selector", "#chart-hours g.bar")
        assert len(bars) == 24
        browser.el("#chart-days details summary").click()
        assert browser.el("#chart-days details table").is_displayed()
        assert not browser.overflows()
        # The charts card just below the sticky top bar.
        browser.driver.execute_script(
            "window.scrollTo(0, arguments[0].getBoundingClientRect().top + window.scrollY - 52)", browser.el("#charts"))
        browser.driver.save_screenshot(str(screenshot_dir() / f"dashboard-charts-{lang}.png"))
        # The per-account selector reloads the page with the account's figures (no script needed).
        Select(browser.el("#f-chart-account")).select_by_value("anna")
        browser.el("#chart-show").click()
        browser.wait(lambda: "chart_account=anna" in browser.driver.current_url, what="the account's charts")
        legend = [t.text for t in browser.driver.find_elements("css selector", "#chart-hours svg text")][:3]
        assert legend[0] == {"en": "Delivered: 5", "de": "Zugestellt: 5"}[lang]
        link = browser.el("#chart-hours svg a").get_dom_attribute("href") or ""
        assert "/trail?outcome=" in link and "account=anna" in link
