"""Markdown output: tables and number formatting, one place so every bench looks the same."""

from __future__ import annotations

NA = "not available"


def table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def secs(value: float | None) -> str:
    """Seconds with sensible precision."""
    if value is None:
        return NA
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def mb(value: float | None) -> str:
    """Megabytes."""
    return NA if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def ratio(value: float | None) -> str:
    """A ratio like 3.1x."""
    return NA if value is None else f"{value:.2f}x"
