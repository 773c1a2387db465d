"""One trail entry as the collector records it, and the SQL that writes it with the collector's own records.

The collector never commits a trail row on its own: `statements()` gives the writes that the
state store queues in the same batch as the record that decides the message's outcome
(`Store.mark_done` for a placed message, `Store.note_attempt` for one that stays on the
server), so the trail costs no commit and no fsync of its own (docs/TRAIL.md).

Every text comes from a message's headers or a server's reply, so it is hostile: it is stored
on one line (controls, line separators and bidi overrides written as visible escapes) and cut
to a bound, so a page, a terminal or a CSV cell shows what it says and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from smartpop.log import escape_controls

# 'delivered': every copy to a user; 'fallback': at least one copy to the fallback mailbox;
# 'waiting' / 'failed': stays on the server (temporary / nobody would take it);
# 'duplicate': every recipient already had it; 'consumed': a health round-trip message.
OUTCOMES = ("delivered", "fallback", "waiting", "failed", "duplicate", "consumed")
PLACEMENTS = ("user", "fallback", "refused", "waiting", "duplicate")

# Bounds of what is stored (characters, after escaping). A Message-ID or a subject may be a
# megabyte long in a hostile message; a trail row stays small whatever the message says.
ADDRESS_MAX = 320
MESSAGE_ID_MAX = 500
SUBJECT_MAX = 300
RULE_MAX = 60
DETAIL_MAX = 1000
REPLY_MAX = 300
# Copies one trail row lists at most: a message to 5,000 recipients keeps the first ones.
COPIES_MAX = 500

# Used by the copies' INSERT: the trail row of the same batch is the newest one (see statements()).
INSERT_TRAIL = ("INSERT INTO trail (at, account, folder, uid, message_id, sender, from_addr, subject, rule, detail,"
                " size, outcome, redelivered) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
INSERT_COPIES = "INSERT INTO trail_copies (trail_id, rcpt, placement, reply) SELECT MAX(id), ?, ?, ? FROM trail"

Statement = Tuple[str, Any, bool]  # as smartpop.collector.groupcommit: sql, parameters, executemany?


def bounded(text: Optional[str], limit: int) -> str:
    """`text` on one line with every control escaped, cut to `limit` characters."""
    if not text:
        return ""
    # Cut before escaping too: escaping a megabyte only to keep 300 characters of it is waste.
    return escape_controls(text[: limit * 2])[:limit]


@dataclass
class TrailCopy:
    """Where one copy of a message went, with MailPlus's reply."""

    rcpt: str
    placement: str
    reply: str = ""


@dataclass
class TrailEntry:
    """What the trail records about one message handled by one run."""

    message_id: str = ""
    sender: str = ""
    from_addr: str = ""
    subject: Optional[str] = None  # None unless trail.subjects is on
    rule: str = ""
    detail: str = ""
    size: int = 0
    outcome: str = "delivered"
    redelivered: bool = False
    copies: List[TrailCopy] = field(default_factory=list)

    def add(self, rcpts: Iterable[str], placement: str, reply: str = "") -> None:
        """Note copies of `rcpts` with one placement and reply."""
        for rcpt in rcpts:
            self.copies.append(TrailCopy(rcpt, placement, reply))

    def note_result(self, accepted: Sequence[str], reply: str, deferred: Dict[str, str], rejected: Dict[str, str],
                    to_fallback: Optional[str], marked: bool) -> None:
        """Note one SMTP transaction's outcome; `to_fallback` names the copy that went to the fallback mailbox."""
        for rcpt in accepted:
            self.copies.append(TrailCopy(rcpt, "fallback" if rcpt == to_fallback else "user", reply))
        for rcpt, why in deferred.items():
            self.copies.append(TrailCopy(rcpt, "waiting", why))
        for rcpt, why in rejected.items():
            self.copies.append(TrailCopy(rcpt, "refused", why))
        if marked and accepted:
            self.redelivered = True

    def settle(self, placed: bool, fallback: bool = False) -> None:
        """Decide the outcome from the copies (`placed` False: it stays on the server; `fallback`: counted so)."""
        if not placed:
            # Anything that waits for a retry wins over "nobody would take it".
            waits = any(c.placement == "waiting" for c in self.copies)
            self.outcome = "waiting" if waits else "failed"
        elif self.copies and all(c.placement == "duplicate" for c in self.copies):
            self.outcome = "duplicate"
        elif fallback or any(c.placement in ("fallback", "refused") for c in self.copies):
            # A placed message with a refused copy: that copy is in the fallback mailbox (now or before).
            self.outcome = "fallback"
        else:
            self.outcome = "delivered"


def statements(account: str, folder: str, uid: str, entry: TrailEntry, now: float) -> List[Statement]:
    """The writes of one trail row and its copies, for the batch that holds the message's own record.

    The copies find their row as MAX(id): the statements run in one transaction, in order, on
    the one connection that holds SQLite's write lock (BEGIN IMMEDIATE), so no other writer (a
    thread of this process or another process) can insert a trail row in between, and a new
    rowid is always above every existing one (pruning deletes the oldest rows only).
    """
    outcome = entry.outcome if entry.outcome in OUTCOMES else "failed"
    subject = None if entry.subject is None else bounded(entry.subject, SUBJECT_MAX)
    row = (now, bounded(account, 200), bounded(folder, 200), bounded(uid, 200),
           bounded(entry.message_id, MESSAGE_ID_MAX), bounded(entry.sender, ADDRESS_MAX),
           bounded(entry.from_addr, ADDRESS_MAX), subject, bounded(entry.rule, RULE_MAX),
           bounded(entry.detail, DETAIL_MAX), max(0, int(entry.size)), outcome, 1 if entry.redelivered else 0)
    copies = [(bounded(c.rcpt, ADDRESS_MAX), c.placement if c.placement in PLACEMENTS else "refused",
               bounded(c.reply, REPLY_MAX)) for c in entry.copies[:COPIES_MAX]]
    return [(INSERT_TRAIL, row, False), (INSERT_COPIES, copies, True)]


def prune_statements(cutoff: float, batch: int) -> List[Statement]:
    """Delete at most `batch` trail rows older than `cutoff` (oldest first) and their copies."""
    # The copies first: both statements select the same oldest rows (same query, same data).
    return [("DELETE FROM trail_copies WHERE trail_id IN (SELECT id FROM trail WHERE at < ? ORDER BY at LIMIT ?)",
             (cutoff, batch), False),
            ("DELETE FROM trail WHERE id IN (SELECT id FROM trail WHERE at < ? ORDER BY at LIMIT ?)",
             (cutoff, batch), False)]
