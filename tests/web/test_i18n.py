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
