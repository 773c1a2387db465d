"""The Diagnostics page (issue 13 §4): the doctor's report through the CGI, linked from the overview."""

from __future__ import annotations

from typing import List

from webrig import Browserless, Rig


def test_diagnostics_page_shows_the_report_without_secrets(rig: Rig, admin: Browserless,
                                                           secrets_of_config: List[str]) -> None:
    overview = admin.get("/")
    assert overview.status_code == 200
    assert 'id="diagnostics-link"' in overview.text and "/doctor/" in overview.text
    assert "from 127.0.0.1" in overview.text  # the overview says collected mail may skip MailPlus's checks
    page = admin.get("/doctor/")
    assert page.status_code == 200
    assert "MailPlus&#39;s protection of collected mail" in page.text or "MailPlus's protection" in page.text
    assert 'id="doctor-report"' in page.text and "SmartPop doctor (" in page.text
    assert "not on a DSM NAS" in page.text
    report = admin.get("/doctor/api").json()
    assert {f["id"] for f in report["facts"]} >= {"dsm_version", "filters", "root_task", "ca_bundle"}
    for body in admin.bodies:
        for secret in secrets_of_config:
            assert secret not in body


def test_diagnostics_page_is_german_for_german_browsers(rig: Rig) -> None:
    client = Browserless(rig, "admin")
    page = client.get("/doctor/", headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert page.status_code == 200 and "Diagnose" in page.text
