"""`smartpop trail`: the trail search on the command line (the same rows as the Trail page)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Dict, List

from smartpop.errors import UsageError
from smartpop.log import escape_controls
from smartpop.paths import Paths
from smartpop.trail import query

log = logging.getLogger(__name__)

FILTER_OPTIONS = ("since", "until", "sender", "rcpt", "message_id", "account", "outcome")


def _line(row: Dict[str, Any]) -> str:
    copies = ", ".join(f"{c['rcpt']} ({c['placement']})" for c in row["copies"]) or "-"
    sender = row["from_addr"] or row["sender"] or "<>"
    marks = " [sent again]" if row["redelivered"] else ""
    text = (f"{query.local_time(row['at'])}  {row['account']}  {row['outcome']}{marks}  from {sender}  "
            f"-> {copies}  {row['message_id'] or '(no Message-ID)'}  rule {row['rule'] or '-'}")
    # Stored text is already on one line; escaping again costs nothing and guards an old row.
    return escape_controls(text)


def _json_row(row: Dict[str, Any]) -> Dict[str, Any]:
    result = dict(row)
    result["time"] = query.iso_time(row["at"])
    return result


def cmd_trail(paths: Paths, args: argparse.Namespace) -> int:
    """Print the newest trail rows that match the options; exit 0 (also when none match), 2 on a bad option."""
    values = {name: getattr(args, name, None) or "" for name in FILTER_OPTIONS}
    filters, errors = query.parse_filters(values)
    if errors:
        name, message = next(iter(errors.items()))
        raise UsageError(f"--{name.replace('_', '-')}: {message}")
    if not 1 <= args.limit <= query.MAX_LIMIT:
        raise UsageError(f"--limit: give a number from 1 to {query.MAX_LIMIT}")
    rows, total = query.search(paths, filters, limit=args.limit)
    if args.json:
        print(json.dumps({"total": total, "shown": len(rows), "rows": [_json_row(r) for r in rows]}, indent=2,
                         ensure_ascii=False))
        return 0
    lines: List[str] = [_line(row) for row in rows]
    if lines:
        print("\n".join(lines))
    print(f"{len(rows)} of {total} message(s) shown, newest first" +
          (" (use --limit for more)" if total > len(rows) else ""))
    return 0
