"""The Trail page in headless Chromium at DSM's 800 px, in English and German; screenshots (issue 16)."""

from __future__ import annotations

import pytest
from selenium.webdriver.support.ui import Select
from test_trail_page import seed
from webrig import Rig

from support.browser import Browser, chromium

pytestmark = pytest.mark.browser


def test_trail_search_and_a_message_path_at_800_px(rig: Rig, browser: Browser) -> None:
    ids = seed(rig.paths.state_db)
    browser.login(rig)
    browser.viewport(800, 700)
    browser.el("#nav-trail").click()
    browser.wait(lambda: browser.text("h1") == "Mail trail", what="the trail page")
    assert browser.text("#trail-count") == "4 messages found"
    assert not browser.overflows(), "the trail page scrolls sideways at 800 px"
    # Hostile header text shows as text, escaped: no element, no dialog.
    assert "<script>alert(1)</script>" in browser.text("#trail-table")
    browser.shot("trail-800")
    Select(browser.el("#f-outcome")).select_by_value("fallback")
    browser.fill("#f-since", "1d")
    browser.el("#trail-search").click()
    browser.wait(lambda: "outcome=fallback" in browser.driver.current_url, what="the filter applied")
    assert browser.text("#trail-count") == "1 messages found"
    assert "SynoToken=" in browser.driver.current_url  # the GET form kept DSM's token
    # A click anywhere on the row opens the message's path.
    browser.el("#trail-table tbody tr td.addr").click()
    browser.wait(lambda: f"/trail/{ids['fallback']}" in browser.driver.current_url, what="the message's path")
    assert browser.text("h1") == "Path of a message"
    copies = browser.text("#detail-copies")
    assert "nobody@firma.de" in copies and "550 5.1.1" in copies and "fallback mailbox" in copies
    assert not browser.overflows(), "the path scrolls sideways at 800 px"
    browser.shot("trail-detail-800")
    browser.el("#trail-back").click()
    browser.wait(lambda: browser.text("h1") == "Mail trail", what="back to the results")
    assert browser.text("#trail-count") == "1 messages found"


def test_trail_in_german_at_800_px(rig: Rig) -> None:
    ids = seed(rig.paths.state_db)
    with chromium(lang="de") as german:
        german.login(rig)
        german.viewport(800, 700)
        german.open(rig, "/trail/")
        german.wait(lambda: german.text("h1") == "Mail-Verlauf", what="the German trail page")
        assert german.text("#nav-trail") == "Verlauf"
        assert "an Sammeladresse" in german.text("#trail-table")
        assert not german.overflows()
        german.shot("trail-de-800")
        german.open(rig, f"/trail/{ids['waiting']}")
        german.wait(lambda: german.text("h1") == "Weg einer Nachricht", what="the German path")
        assert "452 4.3.1" in german.text("#detail-copies")
        assert not german.overflows()
        german.shot("trail-detail-de-800")
