"""Where a SmartPop profile's CPU went, by concern (issue 14 point 4: header parsing, routing, SQLite...).

A top-18 list of functions by own time hides the answer to "what does SmartPop do that the
plain loop does not": the cost is spread over many small functions. Summing own time per
concern (decided by the function's file and name) shows it in one table.
"""

from __future__ import annotations

import pstats
from typing import Dict, List, Tuple

# (concern, what the plain loop also does?) in the order the table lists them. The first rule
# in RULES that matches a function decides its concern.
CONCERNS: Tuple[Tuple[str, bool], ...] = (
    ("POP3 fetch (protocol, TLS reads)", True),
    ("SMTP hand-over (protocol, socket writes)", True),
    ("TLS (OpenSSL calls)", True),
    ("spool (message bytes kept for the hand-over)", False),
    ("headers (parsing, trace lines)", False),
    ("routing and address checks", False),
    ("state and trail (SQLite, group commit)", False),
    ("logging", False),
    ("run loop and placement (runner)", False),
    ("threads and locks", False),
    ("start-up (imports, config)", False),
    ("other", False),
)

# (concern, substring of "file:function", ...): checked in this order.
RULES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("start-up (imports, config)", ("importlib", "<frozen", "marshal", "smartpop/config/", "builtins.exec",
                                     "builtins.__build_class__", "re/_compiler", "re/_parser", "sre_")),
    ("TLS (OpenSSL calls)", ("_ssl.", "ssl.py")),
    ("logging", ("logging/", "smartpop/log.py")),
    ("threads and locks", ("threading.py", "queue.py", "_thread.", "lock' objects", "Condition", "Event")),
    # collector/state covers state.py and its neighbours statedb, statehub and staterows.
    ("state and trail (SQLite, group commit)", ("sqlite3", "collector/state", "collector/statusread.py",
                                                 "collector/groupcommit.py", "collector/storepool.py",
                                                 "smartpop/trail/")),
    ("spool (message bytes kept for the hand-over)", ("collector/spool.py", "tempfile", "os.fsync", "os.write",
                                                      "posix.")),
    ("headers (parsing, trace lines)", ("collector/headers.py", "collector/trace.py", "/email/")),
    ("routing and address checks", ("collector/recipients.py", "collector/addresslist.py",
                                    "collector/mailboxcheck.py", "collector/policy.py", "collector/loopkey.py",
                                    "unicodedata", "hmac", "_hashlib")),
    ("run loop and placement (runner)", ("collector/runner.py", "collector/mailbox.py", "collector/placer.py",
                                         "collector/placement.py", "collector/failure.py", "collector/concurrency.py",
                                         "collector/daemon.py", "collector/service.py")),
    ("POP3 fetch (protocol, TLS reads)", ("collector/pop3.py", "collector/transport.py", "poplib")),
    ("SMTP hand-over (protocol, socket writes)", ("collector/delivery.py", "collector/smtpconn.py",
                                                  "collector/smtpreply.py", "smtplib", "_socket.", "socket.py")),
)


def concern_of(where: str) -> str:
    """The concern of one profiled function, given as "file:line(function)" or "{built-in ...}"."""
    for concern, needles in RULES:
        if any(needle in where for needle in needles):
            return concern
    return "other"


def _where(key: Tuple[str, int, str]) -> str:
    filename, line, function = key
    return f"{filename}:{line}({function})" if filename != "~" else function


def by_concern(stats: pstats.Stats) -> Dict[str, float]:
    """Own CPU seconds per concern over every function of `stats`.

    A builtin that no rule claims (len, bytes.replace, list.append: called from everywhere) has
    its own time split over its callers, by what each call site spent in it.
    """
    totals = {name: 0.0 for name, _ in CONCERNS}
    for key, row in stats.stats.items():  # type: ignore[attr-defined]
        own, callers = float(row[2]), row[4]
        concern = concern_of(_where(key))
        if concern == "other" and key[0] == "~" and callers:
            spent = sum(float(c[2]) for c in callers.values()) or 1.0
            for caller, c in callers.items():
                totals[concern_of(_where(caller))] += own * float(c[2]) / spent
            continue
        totals[concern] += own
    return totals


def top_other(stats: pstats.Stats, count: int = 10) -> List[Tuple[str, float]]:
    """The functions with the most own time that no rule claims: where to look next."""
    rows = []
    for key, row in stats.stats.items():  # type: ignore[attr-defined]
        where = _where(key)
        if concern_of(where) == "other" and not (key[0] == "~" and row[4]):  # not split over callers
            rows.append((where, float(row[2])))
    return sorted(rows, key=lambda r: r[1], reverse=True)[:count]


def table(totals: Dict[str, float], unprofiled_cpu: float) -> List[str]:
    """Markdown rows: each concern's share of the profile and those shares applied to a run without cProfile."""
    whole = sum(totals.values()) or 1.0
    rows = ["| concern | the plain loop does it too | share of the profile | ~CPU-s of a run without cProfile |",
            "| --- | --- | --- | --- |"]
    extra = 0.0
    for name, shared in CONCERNS:
        share = totals.get(name, 0.0) / whole
        if not shared:
            extra += share
        rows.append(f"| {name} | {'yes' if shared else 'no'} | {share * 100:.0f} % | {share * unprofiled_cpu:.2f} |")
    rows.append(f"| what the loop has no counterpart for | | {extra * 100:.0f} % | {extra * unprofiled_cpu:.2f} |")
    return rows
