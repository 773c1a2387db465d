"""Exactly-once check: every expected Message-ID in the right local maildir, once, nothing else."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bench.corpus import Sample, message_id
from bench.stack import MailStack, local_files


@dataclass
class Check:
    """Outcome of one exactly-once census."""

    expected: int
    delivered: int
    missing: int
    duplicates: int
    strays: int
    left_on_server: int | None = None

    @property
    def ok(self) -> bool:
        """Every message arrived exactly once where it belonged (and left the server if it should)."""
        return (self.missing == 0 and self.duplicates == 0 and self.strays == 0
                and not self.left_on_server)

    def text(self) -> str:
        """Short verdict for the table."""
        if self.ok:
            return f"ok: {self.delivered}/{self.expected} exactly once"
        parts = [f"{self.delivered}/{self.expected} delivered"]
        for label, value in (("missing", self.missing), ("duplicated", self.duplicates),
                             ("unexpected", self.strays), ("left on server", self.left_on_server)):
            if value:
                parts.append(f"{value} {label}")
        return "FAIL: " + ", ".join(parts)


def census(stack: MailStack, samples: list[Sample], *, server_user: str | None = None) -> Check:
    """Compare the local maildirs with `samples`; count what the provider still holds for `server_user`."""
    wanted: dict[str, set[str]] = {}
    for sample in samples:
        wanted.setdefault(sample.recipient, set()).add(sample.msgid)
    missing = duplicates = strays = delivered = 0
    for rcpt, ids in wanted.items():
        seen = Counter(message_id(path.read_bytes()) for path in local_files(stack, rcpt))
        delivered += sum(n for mid, n in seen.items() if mid in ids)
        missing += sum(1 for mid in ids if mid not in seen)
        duplicates += sum(n - 1 for mid, n in seen.items() if mid in ids and n > 1)
        strays += sum(n for mid, n in seen.items() if mid not in ids)
    left = stack.provider_count(server_user) if server_user else None
    return Check(len(samples), delivered, missing, duplicates, strays, left)
