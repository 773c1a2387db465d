"""The Trail page through the CGI without a browser: search, a message's path, CSV, settings, escaping (issue 16)."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Dict, List

from webrig import Browserless, Rig

from smartpop.collector.state import Key, Store
from smartpop.trail.record import TrailEntry

HOSTILE_SUBJECT = "<script>alert(1)</script>\r\nBcc: x@evil\u202e"


def seed(db: Path) -> Dict[str, int]:
    """Four messages of today: delivered, to the fallback (refused first), waiting, and a hostile one."""
    store = Store(db)
    try:
        delivered = TrailEntry(message_id="<angebot-1@kunde.de>", sender="bounce@kunde.de", from_addr="chef@kunde.de",
                               rule="Delivered-To", detail="Delivered-To: anna@firma.de", size=2048)
        delivered.add(["anna@firma.de"], "user", "250 2.0.0 Ok: queued as 4Xy")
        delivered.settle(placed=True)
        fallback = TrailEntry(message_id="<rechnung@lieferant.de>", sender="buchhaltung@lieferant.de",
                              from_addr="buchhaltung@lieferant.de", rule="Delivered-To",
                              detail="Delivered-To: nobody@firma.de", size=4096)
        fallback.add(["nobody@firma.de"], "refused", "550 5.1.1 <nobody@firma.de>: Recipient address rejected")
        fallback.add(["postmaster@firma.de"], "fallback", "250 2.0.0 Ok: queued as 5Zz")
        fallback.settle(placed=True)
        waiting = TrailEntry(message_id="<gross@kunde.de>", sender="chef@kunde.de", from_addr="chef@kunde.de",
                             rule="X-Original-To", detail="X-Original-To: ben@firma.de", size=30_000_000)
        waiting.add(["ben@firma.de"], "waiting", "452 4.3.1 Insufficient system storage")
        waiting.settle(placed=False)
        hostile = TrailEntry(message_id="<x@evil>", sender="=cmd|' /C calc'!A0@evil.example",
                             from_addr="\"><img src=x onerror=alert(1)>@evil.example", subject=HOSTILE_SUBJECT,
                             rule="To/Cc", detail="<b>bold</b>", size=10)
        hostile.add(["anna@firma.de"], "user", "250 <i>ok</i>")
        hostile.settle(placed=True)
        store.mark_done(Key("sammelpostfach", "", "1", "1"), "", "", 1, trail=delivered)
        store.mark_done(Key("sammelpostfach", "", "1", "2"), "", "", 1, trail=fallback)
        store.note_attempt(Key("sammelpostfach", "", "1", "3"), "", "", 1, "452", 0.0, trail=waiting)
        store.mark_done(Key("sammelpostfach", "", "1", "4"), "", "", 1, trail=hostile)
    finally:
        store.close()
    return {"delivered": 1, "fallback": 2, "waiting": 3, "hostile": 4}


def _ids(html: str) -> List[int]:
    return [int(n) for n in re.findall(r'<tr class="outcome-\w+" data-href="[^"]*/trail/(\d+)', html)]


def test_search_filters_and_links(rig: Rig, admin: Browserless) -> None:
    ids = seed(rig.paths.state_db)
    page = admin.get("/trail/")
    assert page.status_code == 200
    assert _ids(page.text) == [4, 3, 2, 1]  # newest first
    assert 'id="nav-trail"' in page.text and "4 messages found" in page.text
    assert _ids(admin.get("/trail?outcome=fallback").text) == [ids["fallback"]]
    assert _ids(admin.get("/trail?outcome=waiting,failed").text) == [ids["waiting"]]
    # The overview's and the charts' links: since as unix seconds or ISO, and the account.
    since = int(time.time()) - 3600
    assert _ids(admin.get(f"/trail?outcome=fallback&since={since}&account=sammelpostfach").text) == [ids["fallback"]]
    iso = time.strftime("%Y-%m-%dT%H:%M", time.localtime(since))
    assert _ids(admin.get(f"/trail?outcome=fallback&since={iso}&account=sammelpostfach").text) == [ids["fallback"]]
    assert _ids(admin.get(f"/trail?since={int(time.time()) + 60}").text) == []
    assert _ids(admin.get("/trail?sender=kunde.de").text) == [ids["waiting"], ids["delivered"]]
    assert _ids(admin.get("/trail?rcpt=postmaster").text) == [ids["fallback"]]
    assert _ids(admin.get("/trail?message_id=angebot-1@kunde.de").text) == [ids["delivered"]]
    assert _ids(admin.get("/trail?account=other").text) == []
    bad = admin.get("/trail?since=someday&outcome=lost").text
    assert 'id="trail-filter-error"' in bad and "From: not a time" in bad and "Outcome: unknown value" in bad
    # The overview links today's counts to the matching search.
    overview = admin.get("/").text
    link = re.search(r'<a class="today" data-today="fallback" href="([^"]+)"', overview)
    assert link, overview
    target = link.group(1).replace("&amp;", "&")
    assert "outcome=fallback" in target and "account=sammelpostfach" in target and "since=" in target
    assert _ids(admin.get(target[target.index("/trail"):]).text) == [ids["fallback"]]
    assert re.search(r'data-today="all"[^>]*>3 today<', overview)  # delivered and fallback; not waiting
    assert 'data-today="waiting"' not in overview  # status says nothing waits (no run recorded it)


def test_detail_shows_the_path(rig: Rig, admin: Browserless) -> None:
    ids = seed(rig.paths.state_db)
    page = admin.get(f"/trail/{ids['fallback']}?outcome=fallback")
    assert page.status_code == 200
    text = page.text
    for part in ("Collected from the provider", "Routing rule", "Handed to MailPlus", "Delivered-To: nobody@firma.de",
                 "nobody@firma.de", "refused", "550 5.1.1", "postmaster@firma.de", "fallback mailbox",
                 "250 2.0.0 Ok: queued as 5Zz", "POP3 · pop.provider.de", "&lt;rechnung@lieferant.de&gt;",
                 "not kept"):
        assert part in text, part
    assert re.search(r'id="trail-back" href="[^"]*/trail/?\?outcome=fallback', text)
    assert admin.get("/trail/999").status_code == 404
    german = admin.get(f"/trail/{ids['waiting']}", headers={"Accept-Language": "de"}).text
    assert "Weg einer Nachricht" in german and "wartet" in german and "452 4.3.1" in german


def test_hostile_text_is_escaped(rig: Rig, admin: Browserless) -> None:
    ids = seed(rig.paths.state_db)
    for path in ("/trail/", f"/trail/{ids['hostile']}"):
        text = admin.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>bold" not in text
        assert "<i>ok" not in text
        assert "\u202e" not in text  # stored as a visible escape
    detail = admin.get(f"/trail/{ids['hostile']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\r\\nBcc: x@evil\\u202e" in detail


def test_csv_download_of_the_current_search(rig: Rig, admin: Browserless) -> None:
    seed(rig.paths.state_db)
    page = admin.get("/trail?sender=evil").text
    link = re.search(r'id="trail-csv" href="([^"]+)"', page)
    assert link
    target = link.group(1).replace("&amp;", "&")
    response = admin.get(target[target.index("/trail"):])
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["time", "account", "folder"] and len(rows) == 2
    cells = dict(zip(rows[0], rows[1]))
    assert cells["sender"].startswith("'=cmd")  # never a formula in a spreadsheet
    assert cells["subject"] == HOSTILE_SUBJECT.replace("\r\n", "\\r\\n").replace("\u202e", "\\u202e")
    everything = admin.get("/trail/export.csv")
    assert len(list(csv.reader(io.StringIO(everything.content.decode("utf-8-sig"))))) == 5
    assert admin.get("/trail/export.csv?since=never").status_code == 400


def test_settings_are_saved_and_validated(rig: Rig, admin: Browserless) -> None:
    token = admin.csrf()
    response = admin.post("/trail/settings", data={"csrf_token": token, "subjects": "on", "retention_days": "7"})
    assert response.status_code == 302 and "done=saved" in response.headers["Location"]
    assert rig.config_document()["trail"] == {"subjects": True, "retention_days": 7}
    response = admin.post("/trail/settings", data={"csrf_token": token, "retention_days": "0"})
    assert response.status_code == 422 and 'id="err-retention_days"' in response.text
    assert rig.config_document()["trail"] == {"subjects": True, "retention_days": 7}
    assert admin.post("/trail/settings", data={"retention_days": "9"}).status_code == 403  # no CSRF token
    page = admin.get("/trail/").text
    assert re.search(r'id="f-subjects" type="checkbox" name="subjects" checked', page)
    assert 'name="retention_days" type="number" value="7"' in page


def test_every_trail_route_needs_an_admin_session(rig: Rig) -> None:
    seed(rig.paths.state_db)
    for client in (Browserless(rig), Browserless(rig, "anna")):
        for path in ("/trail", "/trail/", "/trail/1", "/trail/export.csv", "/trail?sender=kunde"):
            response = client.get(path)
            assert response.status_code in (401, 403), path
            assert "kunde.de" not in response.text
        assert client.post("/trail/settings", data={"retention_days": "1"}).status_code in (401, 403)
