"""Benchmark messages: RFC 5322 text of a chosen size, with a unique Message-ID each.

The bytes go straight into the provider's maildir (LF line ends, as a maildir stores
them), so filling 2,000 messages takes well under a second and no tool is involved.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_MSGID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_LINE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 the quick brown fox\n"


@dataclass(frozen=True)
class Sample:
    """One generated message and where it must end up."""

    msgid: str
    recipient: str
    data: bytes


def message(tag: str, n: int, recipient: str, size: int, envelope: bool = True) -> Sample:
    """A ~`size`-byte message; `envelope` adds the provider's Delivered-To (multidrop)."""
    msgid = f"<b{n}.{tag}@remote.test>"
    head = (f"Return-Path: <sender{n}@remote.test>\n"
            + (f"Delivered-To: {recipient}\n" if envelope else "")
            + f"From: Sender {n} <sender{n}@remote.test>\nTo: {recipient}\n"
            f"Subject: bench {tag} message {n}\nDate: Sat, 28 Nov 2026 06:00:00 +0000\n"
            f"Message-ID: {msgid}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n").encode()
    missing = max(size - len(head), len(_LINE))
    body = _LINE * (missing // len(_LINE) + 1)
    return Sample(msgid, recipient, head + body[:missing - 1] + b"\n")


def multidrop(tag: str, count: int, recipients: list[str], size: int) -> list[Sample]:
    """`count` messages whose Delivered-To alternates over `recipients`."""
    return [message(tag, i, recipients[i % len(recipients)], size) for i in range(count)]


def message_id(data: bytes) -> str | None:
    """The Message-ID of a stored message (first match in its header), or None."""
    end = data.find(b"\n\n")
    match = _MSGID.search(data[: end if end >= 0 else 65536])
    return match.group(1).decode("ascii", "replace") if match else None


def body_sha256(data: bytes) -> str:
    """SHA-256 of the body with line ends normalised to LF (the transport may add CR)."""
    data = data.replace(b"\r\n", b"\n")
    cut = data.find(b"\n\n")
    return hashlib.sha256(data[cut + 2:] if cut >= 0 else b"").hexdigest()
