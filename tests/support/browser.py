"""Headless Debian Chromium driven by Selenium, logged in through the CGI like a DSM admin.

The one place that starts a browser for the UI tests: the `browser` fixture (tests/web/conftest.py)
and `chromium()` for a second browser in another language.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

if TYPE_CHECKING:
    # tests/web/webrig.py: importable only where tests/web is on sys.path, and needed only for types.
    from webrig import Rig

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1000, 700


def have_browser() -> bool:
    """Debian's chromium and chromedriver are installed (never downloaded)."""
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


NO_BROWSER = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"


@contextmanager
def chromium(lang: str = "en-US") -> Iterator[Browser]:
    """A fresh headless Chromium for the block, closed after it; skips the test when none is installed."""
    if not have_browser():
        pytest.skip(NO_BROWSER)
    instance = Browser(lang=lang)
    try:
        yield instance
    finally:
        instance.quit()


def screenshot_dir() -> Path:
    """Where screenshots go: $SMARTPOP_SCREENSHOTS (docs/screenshots when refreshing them) or the artifacts."""
    directory = Path(os.environ.get("SMARTPOP_SCREENSHOTS") or ROOT / "tests" / ".artifacts" / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Browser:
    """One Chromium with a fresh profile."""

    def __init__(self, lang: str = "en-US") -> None:
        self.profile = tempfile.mkdtemp(prefix="spchr", dir="/tmp")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--disable-quic", f"--user-data-dir={self.profile}",
                     f"--window-size={WIDTH},{HEIGHT}", f"--lang={lang}", "--hide-scrollbars"):
            options.add_argument(flag)
        options.add_experimental_option("prefs", {"intl.accept_languages": lang})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.viewport(WIDTH, HEIGHT)
        self.driver.implicitly_wait(0)
        self.token = ""  # the SynoToken the page obtained from DSM, once logged in

    def viewport(self, width: int, height: int) -> None:
        """Make the page area exactly width x height (a DSM window's content area)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def login(self, rig: Rig, user: str = "admin") -> None:
        """Give the browser a DSM session cookie (as DSM's own login would) and open the app.

        DSM opens the app's URL without a SynoToken: the CGI's first page fetches it from
        /webman/login.cgi in the browser and loads the app again with ?SynoToken=…"""
        sid, token = rig.dsm.login(user)
        self.driver.get(f"http://127.0.0.1:{rig.host.port}/")
        self.driver.add_cookie({"name": "id", "value": sid, "path": "/"})
        self.driver.get(rig.host.url + "/")
        self.wait(lambda: "SynoToken=" in self.driver.current_url
                  and self.driver.execute_script("return document.readyState") == "complete",
                  what="the page to fetch its SynoToken and load again")
        self.token = token

    def open(self, rig: Rig, path: str) -> None:
        """Open a page of the app the way its links do (with the SynoToken in the URL)."""
        url = rig.host.url + path
        if self.token:
            url += ("&" if "?" in path else "?") + "SynoToken=" + self.token
        self.driver.get(url)

    def el(self, css: str) -> WebElement:
        """The first element matching `css`."""
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The visible text of an element."""
        return self.el(css).text

    def fill(self, css: str, value: str) -> None:
        """Clear a field and type into it."""
        field = self.el(css)
        field.clear()
        field.send_keys(value)

    def wait(self, condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        """Poll until `condition()` is truthy."""
        deadline = time.monotonic() + timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            try:
                result = condition()
                if result:
                    return result
            except WebDriverException as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {last}")

    def shot(self, name: str, top: bool = True, show: str = "") -> Path:
        """Save a screenshot of the window (scrolled to the top, or so that `show` is in view)."""
        path = screenshot_dir() / f"{name}.png"
        if show:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", self.el(show))
        elif top:
            self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(path))
        return path

    def overflows(self) -> bool:
        """Whether the page needs horizontal scrolling at the current width."""
        return bool(self.driver.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth + 1"))

    def quit(self) -> None:
        """Close the browser and remove its profile."""
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
