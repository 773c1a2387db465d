"""Languages: German and English catalogs match, templates hold no hard-coded text, keys exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from smartpop.web import i18n
from smartpop.web.views.common import JS_KEYS

WEB = Path(__file__).resolve().parents[2] / "package" / "smartpop" / "web"
TEMPLATES = sorted((WEB / "templates").glob("*.html"))
PY = sorted(WEB.rglob("*.py"))


def test_catalogs_have_the_same_keys_and_no_empty_texts() -> None:
    en = json.loads((WEB / "i18n" / "en.json").read_text(encoding="utf-8"))
    de = json.loads((WEB / "i18n" / "de.json").read_text(encoding="utf-8"))
    assert set(en) == set(de)
    assert all(v.strip() for v in en.values()) and all(v.strip() for v in de.values())
    changed = [k for k in en if en[k] != de[k]]
    assert len(changed) > 0.8 * len(en) - 20  # really translated, not copied


def test_templates_have_no_hard_coded_text() -> None:
    for template in TEMPLATES:
        text = template.read_text(encoding="utf-8")
        text = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
        for attribute in re.findall(r'\b(?:title|placeholder|aria-label|alt)="([^"]*)"', text):
            assert attribute.startswith("{{") or not re.search(r"[A-Za-z]", attribute), (template.name, attribute)
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", text, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", text)
        leftovers = [w for w in re.findall(r"[A-Za-zÄÖÜäöüß]{2,}", text)]
        assert leftovers == [], (template.name, leftovers)


def test_every_literal_key_exists() -> None:
    keys = set(json.loads((WEB / "i18n" / "en.json").read_text(encoding="utf-8")))
    used = set(JS_KEYS)
    for template in TEMPLATES:
        used |= set(re.findall(r"_\('([a-z0-9_.]+)'\)", template.read_text(encoding="utf-8")))
        used |= set(re.findall(r"""(?:label|help)=?'([a-z][a-z0-9_]*\.[a-z0-9_.]+)'""",
                               template.read_text(encoding="utf-8")))
    for module in PY:
        used |= set(re.findall(r'\bt\("([a-z0-9_.]+)"', module.read_text(encoding="utf-8")))
        used |= set(re.findall(r'page_title="([a-z0-9_.]+)"', module.read_text(encoding="utf-8")))
    missing = sorted(k for k in used if k not in keys)
    assert missing == []
    for prefix, values in {"relay.state.": ["disabled", "pending", "applied", "drift", "unknown", "unavailable"],
                           "security.": ["ssl", "starttls", "none"], "mode.": ["multidrop", "single"],
                           "level.": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                           "phase.": ["connect", "list", "fetch", "commit", "done"]}.items():
        for value in values:
            assert prefix + value in keys


def test_language_choice() -> None:
    assert i18n.choose("de", {}) == "de"
    assert i18n.choose(None, {"SYNOPKG_DSM_LANGUAGE": "ger"}) == "de"
    assert i18n.choose(None, {"SYNOPKG_DSM_LANGUAGE": "enu"}) == "en"
    assert i18n.choose(None, {"SYNOPKG_DSM_LANGUAGE": "fre"}) == "en"
    assert i18n.choose("en", {"SYNOPKG_DSM_LANGUAGE": "ger"}) == "en"
    assert i18n.translate("de", "accounts.test.ok", detail="+OK") == "Verbindung funktioniert. Antwort des Servers: +OK"


def test_both_catalogs_use_the_same_placeholders() -> None:
    """A German text that drops or renames an {placeholder} would raise or lose a value when rendered."""
    en = json.loads((WEB / "i18n" / "en.json").read_text(encoding="utf-8"))
    de = json.loads((WEB / "i18n" / "de.json").read_text(encoding="utf-8"))
    fields = re.compile(r"\{(\w+)[^}]*\}")
    assert [k for k in en if set(fields.findall(en[k])) != set(fields.findall(de.get(k, "")))] == []


def test_every_health_finding_message_exists_in_both_languages() -> None:
    """Each health.msg./health.part. key the checks use is in the English and the German catalog."""
    health = WEB.parent / "health"
    used = set()
    for module in sorted(health.glob("*.py")):
        used |= set(re.findall(r'"(health\.(?:msg|part)\.[a-z0-9_.]+)"', module.read_text(encoding="utf-8")))
    assert len(used) > 40
    for lang in ("en", "de"):
        catalog = json.loads((WEB / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
        assert sorted(k for k in used if k not in catalog) == [], lang
    en = json.loads((WEB / "i18n" / "en.json").read_text(encoding="utf-8"))
    unused = sorted(k for k in en if k.startswith(("health.msg.", "health.part.")) and k not in used)
    assert unused == []


def test_a_finding_renders_in_german_and_an_old_report_keeps_its_english_text() -> None:
    """Findings carry a key and parameters (nested phrases too); a report stored before that shows its summary."""
    from smartpop.health import openrelay
    from smartpop.health.findings import localized

    facts = {"params": {"smtpd_relay_restrictions": "permit_mynetworks permit_sasl_authenticated "
                                                    "reject_unauth_destination", "mynetworks": "127.0.0.0/8"},
             "services": ["smtp/inet"]}
    finding = openrelay.check_open_relay(facts, relay_enabled=True)
    assert finding is not None and finding.key == "health.msg.open_relay.ok"
    assert finding.summary.startswith("MailPlus is not an open relay") and "trusted networks and logged-in" in \
        finding.summary
    stored = json.loads(json.dumps(finding.as_dict()))  # as health.json holds it
    german = localized(stored, "de")
    assert german.startswith("MailPlus ist kein offenes Relay") and "vertrauenswürdige Netzwerke und angemeldete" \
        in german and "trusted" not in german
    assert localized(stored, "en") == finding.summary
    old = {"check": "mx", "subject": "firma.de", "status": "ok", "summary": "Mail for firma.de goes to mx.",
           "details": {}}
    assert localized(old, "de") == "Mail for firma.de goes to mx."
    assert localized({**old, "key": "health.msg.gone_in_a_later_version", "params": {}}, "de") == old["summary"]
    assert localized({**old, "key": "health.msg.mx.ok", "params": {"domain": "x"}}, "de") == old["summary"]
