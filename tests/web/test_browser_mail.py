"""Main flows in Chromium against real servers: Dovecot as the provider, Postfix as MailPlus."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, Iterator

import pytest
from selenium.webdriver.support.ui import Select
from webrig import Rig

from smartpop.log import setup_logging
from support.browser import Browser, chromium
from support.collect import message
from support.mailstack import MailStack, have_mail_servers

pytestmark = [pytest.mark.browser, pytest.mark.mailstack]


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    if not have_mail_servers():
        pytest.skip("needs root plus dovecot-core dovecot-pop3d dovecot-imapd postfix openssl")
    mail = MailStack.start(domains=("firma.test", "provider.test"))
    yield mail
    mail.stop()


class People:
    """Test-unique addresses on the stack."""

    def __init__(self, stack: MailStack) -> None:
        tag = os.urandom(3).hex()
        self.catchall = f"sammel.{tag}@provider.test"
        self.password = f"Dovecot-{tag}-Pw!"
        self.anna = f"anna.{tag}@firma.test"
        self.fallback = f"postmaster.{tag}@firma.test"
        stack.add_users([(self.catchall, self.password), (self.anna, "x"), (self.fallback, "x")])


@pytest.fixture
def people(stack: MailStack) -> People:
    return People(stack)


@pytest.fixture
def mail_rig(stack: MailStack, people: People) -> Iterator[Rig]:
    document: Dict[str, Any] = {"schema_version": 1, "accounts": [], "local_domains": ["firma.test"],
                                "aliases": {}, "fallback_recipient": people.fallback,
                                "delivery": {"host": "127.0.0.1", "port": stack.smtp_port}}
    environment = Rig(document)
    # Log like `smartpop serve` does (rotated file, redaction), so the Logs page shows real events.
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging(environment.paths.log_file, stderr=False)
    yield environment
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    environment.stop()


def _fill_account(browser: Browser, stack: MailStack, people: People, password: str) -> None:
    browser.fill("#f-name", "sammel")
    Select(browser.el("#f-protocol")).select_by_value("pop3")
    Select(browser.el("#f-security")).select_by_value("ssl")
    browser.fill("#f-host", "localhost")
    browser.fill("#f-port", str(stack.pop3s_port))
    browser.fill("#f-username", people.catchall)
    browser.fill("#f-password", password)
    browser.fill("#f-ca_file", stack.ca_file)


def _answer(browser: Browser, css: str) -> str:
    return str(browser.wait(lambda: browser.text(css) not in ("", "Working…") and browser.text(css),
                            timeout=60, what=f"answer in {css}"))


def test_add_account_test_connection_fetch_and_watch_dashboard(stack: MailStack, people: People, mail_rig: Rig,
                                                               browser: Browser) -> None:
    stack.fill(people.catchall, [message(n, people.anna) for n in range(1, 4)])
    browser.login(mail_rig)
    browser.open(mail_rig, "/accounts/new")
    _fill_account(browser, stack, people, "wrong-password")
    browser.el("#test-connection").click()
    answer = _answer(browser, "#test-result")
    # Our sentence, with the server's own answer verbatim in quotes (issue 13 §6).
    assert re.match(r"The server localhost:\d+ refused the login\. Server answer: “-ERR .+”$", answer), answer
    assert "bad" in browser.el("#test-result").get_attribute("class")
    browser.fill("#f-password", people.password)
    browser.el("#test-connection").click()
    answer = _answer(browser, "#test-result")
    assert re.match(r"Connection works: POP3 at localhost:\d+, 3 message\(s\) waiting\. Server greeting: “Dovecot.*”$",
                    answer), answer
    browser.shot("account-test-connection", show="#test-result")
    browser.el("#save-account").click()
    browser.wait(lambda: "Account created." in browser.text("main"), what="account created")
    assert browser.text('tr[data-account="sammel"]').count("POP3 · localhost") == 1

    # Fetch now: live progress, then the dashboard row shows the result.
    browser.el("#nav-dashboard").click()
    browser.wait(lambda: browser.text("h1") == "Overview", what="dashboard")
    row = 'tr[data-account="sammel"]'
    assert browser.text(row + ' td[data-field="collected"]').startswith("0")
    browser.el("#fetch-now").click()
    browser.wait(lambda: browser.el("#fetch-progress").is_displayed(), what="progress shown")
    browser.wait(lambda: browser.el("#fetch-progress").get_attribute("data-state") == "done", timeout=90,
                 what="fetch finished")
    assert browser.text("#fetch-text") == "Fetch finished."
    assert "sammel: 3 collected, 0 to fallback, 0 waiting" in browser.text("#fetch-lines")
    browser.wait(lambda: browser.text(row + ' td[data-field="collected"]').startswith("3"), what="row updated")
    assert browser.text(row + ' td[data-field="waiting"]') == "0"
    assert browser.text(row + ' td[data-field="error"]') == "none"
    browser.shot("dashboard-after-fetch")
    stack.wait_delivered({people.anna: 3})
    assert len(stack.maildir(people.anna)) == 3
    assert stack.provider_count(people.catchall) == 0

    # Where would this go? The tester uses the same routing as the collector.
    browser.open(mail_rig, "/routing/")
    browser.fill("#f-headers", f"Delivered-To: {people.anna}\nTo: list@elsewhere.test\nSubject: x\n")
    browser.el("#explain").click()
    browser.wait(lambda: browser.el("#routing-result").is_displayed(), what="routing result")
    assert browser.text("#routing-recipients") == people.anna
    assert browser.text("#routing-rule") == "Delivered-To"
    browser.fill("#f-headers", "To: someone@elsewhere.test\nSubject: y\n")
    browser.el("#explain").click()
    browser.wait(lambda: browser.text("#routing-recipients") == people.fallback, what="fallback shown")
    browser.shot("routing-tester", show="#routing-result")

    # Logs: the collector's decisions for this account, filterable.
    browser.open(mail_rig, "/logs/?account=sammel&level=INFO")
    table = browser.text("#log-table")
    assert "rule Delivered-To" in table and people.anna in table
    assert "sammel: 3 collected" in table
    browser.shot("logs-after-fetch")

    for body in mail_rig.host.bodies:
        assert people.password.encode() not in body
    log_text = mail_rig.paths.log_file.read_text()
    assert "account sammel created by admin" in log_text
    assert people.password not in log_text and "wrong-password" not in log_text


def test_fetch_shows_an_account_error_on_the_dashboard(stack: MailStack, people: People, mail_rig: Rig,
                                                       browser: Browser) -> None:
    doc = mail_rig.config_document()
    doc["accounts"] = [{"name": "kaputt", "protocol": "pop3", "host": "localhost", "port": stack.pop3s_port,
                        "security": "ssl", "username": people.catchall, "password": "Wrong-Pw-123",
                        "ca_file": stack.ca_file, "mode": "multidrop"}]
    mail_rig.write_config(doc)
    browser.login(mail_rig)
    browser.el("#fetch-now").click()
    browser.wait(lambda: browser.el("#fetch-progress").get_attribute("data-state") in ("done", "failed"),
                 timeout=90, what="fetch finished")
    row = 'tr[data-account="kaputt"]'
    browser.wait(lambda: browser.text(row + ' td[data-field="error"]') != "none", what="error shown")
    assert "has-error" in browser.el(row).get_attribute("class")
    assert "FAILED" in browser.text("#fetch-lines")
    assert browser.text("#fetch-text") == "Fetch finished with problems (see below)."
    browser.shot("dashboard-account-error")
    # The outcome lines are worded by the page, so a German page shows German lines.
    with chromium(lang="de") as german:
        german.login(mail_rig)
        german.el("#fetch-now").click()
        german.wait(lambda: german.el("#fetch-progress").get_attribute("data-state") in ("done", "failed"),
                    timeout=90, what="fetch finished (de)")
        lines = german.text("#fetch-lines")
        assert lines.startswith("kaputt: FEHLGESCHLAGEN: "), lines
        assert "FAILED" not in lines
        assert german.text("#fetch-text") == "Abholung mit Problemen beendet (siehe unten)."
        german.shot("dashboard-account-error-de")
    for body in mail_rig.host.bodies:
        assert b"Wrong-Pw-123" not in body
