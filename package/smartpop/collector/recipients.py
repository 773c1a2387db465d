"""Pure routing: which local mailboxes get a collected message (DESIGN.md "Recipients").

Multidrop: the first envelope header that names a local recipient decides, in the order
Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, X-RCPT-TO, then a Received
`for <...>` clause. The catch-all's own address and non-local domains are skipped; a header
holding only such addresses counts as absent. Only when no envelope header names a local
recipient are Resent-To/Resent-Cc, then To/Cc consulted. Aliases map the result; if nothing
local remains, the fallback recipient gets it. A message carrying our own loop marker goes
to the fallback and is never routed by its headers again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from smartpop.collector.headers import LOOP_HEADER, Field, decode_words, values

ENVELOPE_HEADERS = ["delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "x-rcpt-to"]
DISPLAY_NAMES = {"delivered-to": "Delivered-To", "x-original-to": "X-Original-To", "envelope-to": "Envelope-To",
                 "x-envelope-to": "X-Envelope-To", "x-rcpt-to": "X-RCPT-TO"}

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
_BARE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_RECEIVED_FOR = re.compile(r"\bfor\s+<?\s*([^\s<>;()\"]+@[^\s<>;()\"]+?)\s*>?(?=[\s;)]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class RoutingDecision:
    """Where one message goes, and why (for the log and the UI tester)."""

    recipients: List[str]
    rule: str
    detail: str
    loop: bool = False


@dataclass(frozen=True)
class RoutingPolicy:
    """The config facts routing needs, so that routing itself stays pure."""

    mode: str
    local_domains: Tuple[str, ...]
    aliases: Dict[str, List[str]] = field(default_factory=dict)
    fallback: Optional[str] = None
    deliver_to: Optional[str] = None
    own_addresses: Tuple[str, ...] = ()
    loop_tokens: Tuple[str, ...] = ()


def normalise(address: str) -> Optional[str]:
    """Lower-case a bare address and check its shape; None if it is not a usable address."""
    text = address.strip().strip("<>").strip().rstrip(".")
    local, sep, domain = text.rpartition("@")
    if not sep or not _LOCAL.match(local) or local.startswith(".") or ".." in local:
        return None
    if not _DOMAIN.match(domain):
        return None
    return f"{local}@{domain}".lower()


def _strip_comments(text: str) -> str:
    """Remove (comments), honouring quoted strings and nesting."""
    out: List[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            out.append(ch)
            if ch == '"':
                quoted = False
            continue
        if ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _split_items(text: str) -> List[str]:
    """Split an address list on commas and group ends outside quotes and angle brackets."""
    items: List[str] = []
    current: List[str] = []
    quoted = False
    angle = 0
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">" and angle:
            angle -= 1
        if not quoted and angle == 0 and ch in ",;":
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    return items


def extract_addresses(value: str) -> List[str]:
    """Every usable address in a header value (RFC 2047 decoded, groups and comments handled)."""
    text = _strip_comments(decode_words(value))
    found: List[str] = []
    for raw_item in _split_items(text):
        # Group syntax "name: a@b, c@d;" leaves "name: a@b" as the first item.
        item = raw_item
        head, colon, rest = item.partition(":")
        if colon and "<" not in head and "@" not in head and '"' not in head:
            item = rest
        start, end = item.rfind("<"), item.rfind(">")
        if start != -1 and end > start:
            candidate = item[start + 1:end]
            candidate = candidate.rpartition(":")[2] if candidate.startswith("@") else candidate  # source route
        else:
            unquoted = re.sub(r'"[^"]*"', " ", item)
            matches = _BARE.findall(unquoted)
            candidate = matches[-1] if matches else ""
        address = normalise(candidate) if candidate else None
        if address and address not in found:
            found.append(address)
    return found


def received_for(value: str) -> List[str]:
    """Addresses in a Received header's `for <...>` clause."""
    found = []
    for match in _RECEIVED_FOR.finditer(value):
        address = normalise(match.group(1))
        if address and address not in found:
            found.append(address)
    return found


def _is_local(address: str, policy: RoutingPolicy) -> bool:
    return address.rpartition("@")[2] in policy.local_domains


def _filter(addresses: Iterable[str], policy: RoutingPolicy) -> Tuple[List[str], List[str]]:
    """Split into (local recipients, skipped with a reason)."""
    kept: List[str] = []
    skipped: List[str] = []
    for address in addresses:
        if address in policy.own_addresses:
            skipped.append(f"{address} (the collected mailbox itself)")
        elif not _is_local(address, policy):
            skipped.append(f"{address} (not a local domain)")
        elif address not in kept:
            kept.append(address)
    return kept, skipped


def expand_aliases(addresses: Sequence[str], aliases: Dict[str, List[str]]) -> List[str]:
    """Map addresses through `aliases` (nested, loop-safe), keeping order and dropping repeats."""
    result: List[str] = []

    def visit(address: str, trail: Set[str]) -> None:
        targets = aliases.get(address)
        if targets is None or address in trail:
            if address not in result:
                result.append(address)
            return
        for target in targets:
            visit(target.lower(), trail | {address})

    for address in addresses:
        visit(address, set())
    return result


def is_loop(fields: Sequence[Field], policy: RoutingPolicy) -> bool:
    """True if the message already passed through this SmartPop installation."""
    tokens = {t.lower() for t in policy.loop_tokens}
    for value in values(fields, LOOP_HEADER):
        words = {w.lower() for w in value.split()}
        if not tokens or words & tokens:
            return True
    return False


def _final(policy: RoutingPolicy, addresses: List[str], rule: str, detail: str) -> RoutingDecision:
    expanded = expand_aliases(addresses, policy.aliases)
    if expanded != addresses:
        detail += f"; aliases -> {', '.join(expanded)}"
    return RoutingDecision(expanded, rule, detail)


def _fallback(policy: RoutingPolicy, rule: str, detail: str, loop: bool = False) -> RoutingDecision:
    target = policy.fallback or policy.deliver_to
    return RoutingDecision([target] if target else [], rule, detail, loop)


def decide(fields: Sequence[Field], policy: RoutingPolicy) -> RoutingDecision:
    """Route one message from its parsed header fields."""
    if is_loop(fields, policy):
        return _fallback(policy, "loop", f"carries {LOOP_HEADER}: it already passed through SmartPop", loop=True)
    if policy.mode == "single":
        target = policy.deliver_to or ""
        return RoutingDecision([target] if target else [], "single", f"single-drop account: everything to {target}")
    notes: List[str] = []
    for name in ENVELOPE_HEADERS:
        found = values(fields, name)
        if not found:
            continue
        addresses = [a for v in found for a in extract_addresses(v)]
        kept, skipped = _filter(addresses, policy)
        if kept:
            detail = f"{DISPLAY_NAMES[name]}: {', '.join(kept)}"
            if skipped:
                detail += f" (skipped {', '.join(skipped)})"
            return _final(policy, kept, DISPLAY_NAMES[name], detail)
        why = f" ({', '.join(skipped)})" if skipped else ""
        notes.append(f"{DISPLAY_NAMES[name]} holds no local recipient{why}")
    for value in values(fields, "received"):
        kept, skipped = _filter(received_for(value), policy)
        if kept:
            return _final(policy, kept, "Received", f"Received for: {', '.join(kept)}")
    for names, rule in ((("resent-to", "resent-cc"), "Resent-To/Cc"), (("to", "cc"), "To/Cc")):
        addresses = [a for n in names for v in values(fields, n) for a in extract_addresses(v)]
        kept, skipped = _filter(addresses, policy)
        if kept:
            detail = f"no envelope header; {rule}: {', '.join(kept)}"
            if skipped:
                detail += f" (skipped {len(skipped)} non-local)"
            return _final(policy, kept, rule, detail)
    why = "; ".join(notes) if notes else "no envelope header and no local To/Cc"
    return _fallback(policy, "fallback", f"no local recipient found ({why})")
