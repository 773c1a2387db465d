"""The result of one health check: a status, one sentence of why and what to do, and details.

The sentence is a message of the web catalogs (web/i18n/*.json, keys `health.msg.*`) with its
parameters: `summary` keeps the English text for the CLI, the JSON report, alerts and logs, and
the Health page renders `key` and `params` in the reader's language (`localized`). A parameter
may itself be a phrase (`phrase()`) or a list of phrases (`phrases()`), rendered in the same
language. Reports stored before the keys existed have only `summary`, which is then shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

OK = "ok"
WARNING = "warning"
PROBLEM = "problem"
_RANK = {OK: 0, WARNING: 1, PROBLEM: 2}


@dataclass(frozen=True)
class Finding:
    """One check's verdict about one subject (a domain, a relay, a server)."""

    check: str
    subject: str
    status: str
    summary: str
    details: Dict[str, Any] = field(default_factory=dict)
    # The catalog message of `summary` and its values (JSON-ready), for the page's language.
    key: str = ""
    params: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        """The finding as JSON-ready data."""
        return asdict(self)


def make(check: str, subject: str, status: str, key: str, details: Optional[Dict[str, Any]] = None,
         **params: Any) -> Finding:
    """A finding whose summary is catalog message `key` with `params`, in English."""
    return Finding(check, subject, status, render("en", key, params), dict(details or {}), key, params)


def phrase(key: str, **params: Any) -> Dict[str, Any]:
    """A part of a sentence that is itself a catalog message (rendered in the sentence's language)."""
    return {"key": key, "params": params}


def phrases(items: Sequence[Any], sep: str = "; ", join: str = "") -> Dict[str, Any]:
    """Several parts joined by `sep`, or by the catalog word `join` (e.g. "and") when given."""
    return {"items": list(items), "sep": sep, "join": join}


def _catalog(lang: str) -> Dict[str, str]:
    # Loaded on the first finding only: the collector imports this module (roundtrip.consume)
    # on every fetch and never needs the catalogs.
    from smartpop.web import i18n

    return i18n.catalog(lang)


def _value(lang: str, value: Any) -> Any:
    if isinstance(value, dict) and "key" in value:
        params = value.get("params")
        return render(lang, str(value["key"]), params if isinstance(params, dict) else {})
    if isinstance(value, dict) and "items" in value:
        items = value["items"] if isinstance(value["items"], list) else []
        sep = str(value.get("sep", "; "))
        if value.get("join"):
            sep = f" {render(lang, str(value['join']), {})} "
        return sep.join(str(_value(lang, item)) for item in items)
    return value


def render(lang: str, key: str, params: Mapping[str, Any]) -> str:
    """Message `key` of `lang`'s catalog with `params` filled in; KeyError when the catalog lacks it."""
    text = _catalog(lang)[key]
    return text.format(**{name: _value(lang, value) for name, value in params.items()})


def localized(finding: Mapping[str, Any], lang: str) -> str:
    """A stored finding's sentence in `lang`; its English summary for a report without a key (or a key unknown here)."""
    key, params = finding.get("key"), finding.get("params")
    if isinstance(key, str) and key and isinstance(params, dict):
        try:
            return render(lang, key, params)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            pass  # a report of another version, or a damaged one: its own words are the best there is
    return str(finding.get("summary", ""))


def worst(statuses: Iterable[str]) -> str:
    """The most severe of `statuses` (ok when there are none)."""
    result = OK
    for status in statuses:
        if _RANK[status] > _RANK[result]:
            result = status
    return result


def overall(findings: List[Finding]) -> str:
    """The most severe status among `findings`."""
    return worst(f.status for f in findings)
