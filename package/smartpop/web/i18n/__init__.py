"""Message catalogs (German, English) and the choice of language per request."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

log = logging.getLogger(__name__)

LANGUAGES = ["en", "de"]
DEFAULT = "en"
# DSM's three-letter codes (SYNOPKG_DSM_LANGUAGE) for the languages SmartPop speaks.
DSM_CODES = {"ger": "de", "enu": "en"}
_HERE = Path(__file__).resolve().parent
_catalogs: Dict[str, Dict[str, str]] = {}


def catalog(lang: str) -> Dict[str, str]:
    """The key -> text mapping of `lang` (loaded once)."""
    if lang not in _catalogs:
        _catalogs[lang] = json.loads((_HERE / f"{lang}.json").read_text(encoding="utf-8"))
    return _catalogs[lang]


def choose(accept_language_best: Optional[str], environ: Optional[Mapping[str, str]] = None) -> str:
    """The browser's preferred language if we have it, else DSM's, else English."""
    if accept_language_best in LANGUAGES:
        return str(accept_language_best)
    env = os.environ if environ is None else environ
    return DSM_CODES.get(env.get("SYNOPKG_DSM_LANGUAGE", ""), DEFAULT)


def translate(lang: str, key: str, **values: Any) -> str:
    """The text of `key` in `lang` (English if missing there), with {placeholders} filled."""
    text = catalog(lang).get(key)
    if text is None:
        text = catalog(DEFAULT).get(key)
        if text is None:
            log.warning("missing message key %s", key)
            return key
    return text.format(**values) if values else text
