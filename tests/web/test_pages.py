"""The pages through the CGI without a browser: forms, field errors, write-only passwords, languages."""

from __future__ import annotations

import re
from typing import List

from webrig import Browserless, Rig

from support.samples import sample_document

NEW_PASSWORD = "n3w-Secret-Pa55!"


def _no_secrets(client: Browserless, secrets: List[str]) -> None:
    for body in client.bodies:
        for secret in secrets:
            assert secret not in body


def test_every_page_renders_without_secrets(rig: Rig, admin: Browserless, secrets_of_config: List[str]) -> None:
    for path in ("/", "/accounts/", "/accounts/new", "/accounts/sammelpostfach/edit", "/routing/", "/relay/",
                 "/alerts/", "/logs/", "/api/status", "/api/fetch", "/fragment/accounts"):
        response = admin.get(path)
        assert response.status_code == 200, path
    edit = admin.bodies[3]
    assert 'name="password" type="password" value=""' in edit
    assert "leave empty to keep" in edit
    _no_secrets(admin, secrets_of_config)


def test_create_account_field_errors_then_success(rig: Rig, admin: Browserless) -> None:
    token = admin.csrf()
    form = {"csrf_token": token, "name": "Bad Name", "protocol": "imap", "security": "ssl", "host": "imap.firma.de",
            "port": "", "username": "anna@firma.de", "password": NEW_PASSWORD, "mode": "multidrop",
            "enabled": "on", "interval": "60", "folder": "INBOX"}
    response = admin.post("/accounts/new", data=form)
    assert response.status_code == 422
    # The field's label names the setting, so the message at the field starts with the problem itself.
    assert re.search(r'id="err-name"[^>]*>“Bad Name” is not a valid name\. Use lower-case letters, digits',
                     response.text)
    assert NEW_PASSWORD not in response.text  # the password field is not echoed back
    form.update(name="anna", host="not a host")
    response = admin.post("/accounts/new", data=form)
    assert 'id="err-host"' in response.text and "is not a valid host name" in response.text
    form.update(host="imap.firma.de", password="")
    response = admin.post("/accounts/new", data=form)
    assert 'id="err-password"' in response.text
    form.update(password=NEW_PASSWORD)
    response = admin.post("/accounts/new", data=form)
    assert response.status_code == 302 and response.headers["Location"].endswith("/accounts/?done=created")
    stored = rig.config_document()["accounts"][1]
    assert stored["name"] == "anna" and stored["port"] == 993 and stored["password"] == NEW_PASSWORD
    listing = admin.get("/accounts/?done=created").text
    assert "Account created." in listing and "imap.firma.de:993" in listing
    _no_secrets(admin, [NEW_PASSWORD, "s3cret-Fetch!"])


def test_edit_keeps_password_when_empty_and_replaces_it_when_given(rig: Rig, admin: Browserless) -> None:
    token = admin.csrf()
    form = {"csrf_token": token, "protocol": "pop3", "security": "ssl", "host": "pop.provider.de", "port": "995",
            "username": "sammel@firma.de", "password": "", "mode": "multidrop", "enabled": "on",
            "interval": "120", "folder": "INBOX"}
    assert admin.post("/accounts/sammelpostfach/edit", data=form).status_code == 302
    stored = rig.config_document()["accounts"][0]
    assert stored["password"] == "s3cret-Fetch!" and stored["interval"] == 120
    form["password"] = NEW_PASSWORD
    assert admin.post("/accounts/sammelpostfach/edit", data=form).status_code == 302
    assert rig.config_document()["accounts"][0]["password"] == NEW_PASSWORD
    _no_secrets(admin, [NEW_PASSWORD, "s3cret-Fetch!"])


def test_disable_and_delete(rig: Rig, admin: Browserless) -> None:
    token = admin.csrf()
    assert admin.post("/accounts/sammelpostfach/toggle", data={"csrf_token": token}).status_code == 302
    assert rig.config_document()["accounts"][0]["enabled"] is False
    assert "Account disabled." in admin.get("/accounts/?done=disabled").text
    assert admin.post("/accounts/sammelpostfach/delete", data={"csrf_token": token}).status_code == 302
    assert rig.config_document()["accounts"] == []
    assert admin.post("/accounts/nosuch/delete", data={"csrf_token": token}).status_code == 404


def test_routing_save_and_field_errors(rig: Rig, admin: Browserless) -> None:
    token = admin.csrf()
    response = admin.post("/routing/", data={"csrf_token": token, "local_domains": "firma.de\nzweit.de",
                                             "aliases": "info@firma.de: anna@firma.de\nvertrieb@zweit.de: ben@firma.de",
                                             "fallback_recipient": "postmaster@firma.de"})
    assert response.status_code == 302
    doc = rig.config_document()
    assert doc["local_domains"] == ["firma.de", "zweit.de"]
    assert doc["aliases"] == {"info@firma.de": ["anna@firma.de"], "vertrieb@zweit.de": ["ben@firma.de"]}
    response = admin.post("/routing/", data={"csrf_token": token, "local_domains": "firma.de",
                                             "aliases": "", "fallback_recipient": "kein-at"})
    assert response.status_code == 422
    assert re.search(r'id="err-fallback_recipient"[^>]*>“kein-at” is not a mail address\. Enter an address like '
                     r'anna@firma\.de\.<', response.text)
    assert rig.config_document()["fallback_recipient"] == "postmaster@firma.de"


def test_routing_tester_shows_recipients_and_rule(rig: Rig, admin: Browserless) -> None:
    headers = ("Return-Path: <x@example.org>\nDelivered-To: info@firma.de\nFrom: x@example.org\n"
               "To: someone@elsewhere.org\nSubject: hi\n")
    response = admin.post("/routing/explain", data={"csrf_token": admin.csrf(), "headers": headers,
                                                    "account": "sammelpostfach"})
    assert response.status_code == 200
    assert re.search(r'id="routing-recipients">anna@firma.de, ben@firma.de<', response.text)
    assert 'id="routing-rule">Delivered-To<' in response.text
    response = admin.post("/routing/explain", data={"csrf_token": admin.csrf(), "headers": "To: nobody@else.org\n",
                                                    "account": "sammelpostfach"})
    assert 'id="routing-recipients">postmaster@firma.de<' in response.text


def test_relay_settings_and_sender_relays(rig: Rig, admin: Browserless) -> None:
    token = admin.csrf()
    # Another server with the password left empty: the stored password is not sent there (issue 11).
    response = admin.post("/relay/", data={"csrf_token": token, "enabled": "on", "host": "smtp.ionos.de",
                                           "port": "465", "security": "ssl", "username": "relay@firma.de",
                                           "password": ""})
    assert response.status_code == 422 and 'id="err-password"' in response.text
    assert rig.config_document()["relay"] == sample_document()["relay"]
    # The same server and user, password left empty: the stored one is kept.
    response = admin.post("/relay/", data={"csrf_token": token, "enabled": "on", "host": "smtp.provider.de",
                                           "port": "587", "security": "starttls", "username": "relay@firma.de",
                                           "password": ""})
    assert response.status_code == 302
    relay = rig.config_document()["relay"]
    assert relay["enabled"] and relay["host"] == "smtp.provider.de" and relay["password"] == "s3cret-Relay!"
    response = admin.post("/relay/", data={"csrf_token": token, "enabled": "on", "host": "smtp.ionos.de",
                                           "port": "465", "security": "ssl", "username": "relay@firma.de",
                                           "password": "s3cret-Relay!"})
    assert response.status_code == 302
    relay = rig.config_document()["relay"]
    assert relay["enabled"] and relay["host"] == "smtp.ionos.de" and relay["port"] == 465
    assert relay["password"] == "s3cret-Relay!"
    response = admin.post("/relay/", data={"csrf_token": token, "enabled": "on", "host": "", "port": "587",
                                           "security": "starttls", "username": "", "password": ""})
    assert response.status_code == 422 and 'id="err-host"' in response.text
    response = admin.post("/relay/senders", data={"csrf_token": token, "sender": "@zweit.de", "host": "smtp.strato.de",
                                                  "port": "465", "security": "ssl", "username": "z@zweit.de",
                                                  "password": "Zweit-Pa55word"})
    assert response.status_code == 302
    page = admin.get("/relay/").text
    assert "@zweit.de" in page and "smtp.strato.de:465" in page
    response = admin.post("/relay/senders", data={"csrf_token": token, "sender": "kaputt", "host": "smtp.strato.de",
                                                  "security": "ssl", "username": "z", "password": "x"})
    assert response.status_code == 422 and 'id="err-sender"' in response.text
    assert admin.post("/relay/senders/delete", data={"csrf_token": token, "sender": "@zweit.de"}).status_code == 302
    assert rig.config_document()["relay"]["sender_relays"] == []
    _no_secrets(admin, ["s3cret-Relay!", "Zweit-Pa55word"])


def test_test_mail_without_relay_service_says_so(rig: Rig, admin: Browserless) -> None:
    response = admin.post("/relay/test-mail", data={"csrf_token": admin.csrf(), "to": "anna@firma.de"})
    try:
        import smartpop.relay.service  # noqa: F401
    except ImportError:
        assert response.status_code == 503
        assert "not available in this version" in response.json()["message"]
    else:
        assert response.status_code == 200
    response = admin.post("/relay/test-mail", data={"csrf_token": admin.csrf(), "to": "no-address"})
    assert response.status_code == 422 and "is not a mail address" in response.json()["message"]


def test_german_from_browser_language(rig: Rig, admin: Browserless) -> None:
    page = admin.get("/", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}).text
    assert '<html lang="de">' in page and "Jetzt abholen" in page and "Konten" in page
    page = admin.get("/accounts/sammelpostfach/edit", headers={"Accept-Language": "de"}).text
    assert "leer lassen = unverändert" in page
    page = admin.get("/", headers={"Accept-Language": "fr"}).text
    assert '<html lang="en">' in page or '<html lang="de">' in page


def test_presets_cover_the_required_providers(rig: Rig, admin: Browserless) -> None:
    page = admin.get("/accounts/new").text
    for label in ("IONOS", "Strato", "all-inkl", "Hetzner", "GMX", "WEB.DE", "T-Online", "Gmail", "Outlook.com"):
        assert f">{label}" in page
    for host in ("pop.ionos.de", "imap.strato.de", "securepop.t-online.de", "imap.gmail.com", "outlook.office365.com"):
        assert host in page


def test_logs_filter_by_account_and_level(rig: Rig, admin: Browserless) -> None:
    rig.paths.log_file.write_text(
        "2026-11-28 06:00:00,001 INFO smartpop.collector.runner: sammelpostfach: message <a@x> uid 1: rule "
        "Delivered-To -> anna@firma.de\n"
        "2026-11-28 06:00:01,001 ERROR smartpop.collector.runner: sammelpostfach: login failed\n"
        "2026-11-28 06:00:02,001 INFO smartpop.collector.runner: other: collected 2\n"
        "2026-11-28 06:00:03,001 WARNING smartpop.web.views.accounts: password=leaked-in-log stays hidden\n")
    page = admin.get("/logs/").text
    assert "login failed" in page and "other: collected 2" in page and "leaked-in-log" not in page
    page = admin.get("/logs/?account=sammelpostfach&level=INFO").text
    assert "login failed" in page and "rule Delivered-To" in page and "other: collected 2" not in page
    page = admin.get("/logs/?level=ERROR").text
    assert "login failed" in page and "rule Delivered-To" not in page
    assert page.index("06:00:01") >= 0


def test_fetch_now_reports_a_failed_account(rig: Rig, admin: Browserless) -> None:
    doc = rig.config_document()
    doc["accounts"][0]["host"] = "pop.provider.invalid"
    rig.write_config(doc)
    response = admin.post("/api/fetch", data={"csrf_token": admin.csrf()})
    assert response.status_code == 200 and response.json()["job"]["id"] >= 1
    rig.backend.jobs.wait(60)
    job = admin.get("/api/fetch").json()
    assert job["running"] is False
    # .invalid never resolves: the pass ends with that account failed, and says so.
    assert job["ok"] is False
    assert any("sammelpostfach" in line for line in job["lines"])
    # The same outcome as values, for the page to word in its language.
    [result] = job["results"]
    assert result["account"] == "sammelpostfach" and result["skipped"] is False
    assert result["collected"] == 0 and result["fallback"] == 0
    assert "pop.provider.invalid" in result["error"]


def test_an_outdated_root_task_shows_on_the_overview_and_the_relay_page(rig: Rig, admin: Browserless) -> None:
    """Root last ran an older bundle (its hash differs): both pages say the pasted line refuses to run."""
    import json

    doc = rig.config_document()
    doc["relay"]["enabled"] = True
    rig.write_config(doc)
    state = rig.paths.data / "relay" / "state"
    state.mkdir(parents=True)
    (state / "status.json").write_text(json.dumps({"state": "applied", "fingerprint": "old", "version": "0.1.0-0001",
                                                   "bundle_sha256": "0" * 64, "time": "2026-11-29T20:00:00Z"}))
    overview = admin.get("/").text
    assert 'id="relay-task-outdated"' in overview and "still runs SmartPop 0.1.0-0001" in overview
    relay = admin.get("/relay/").text
    assert 'class="task-state task-outdated"' in relay and "refuses to run this version" in relay
    (state / "status.json").unlink()
    assert 'id="relay-task-outdated"' not in admin.get("/").text
    assert "has not run yet" in admin.get("/relay/").text
