"""The result of one health check: a status, one sentence of why and what to do, and details."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List

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

    def as_dict(self) -> Dict[str, Any]:
        """The finding as JSON-ready data."""
        return asdict(self)


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
