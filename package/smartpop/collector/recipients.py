"""Pure routing: which local mailboxes get a collected message (docs/ROUTING.md).

Multidrop: the first envelope header that names a local recipient decides, in the order
Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, X-RCPT-TO, then a Received
`for <...>` clause. Only what the provider wrote counts: envelope headers above the topmost
Received field, and that Received field's `for` clause; anything deeper may come from the
sender. The catch-all's own address and non-local domains are skipped; a header holding
only such addresses counts as absent. Only when no envelope header names a local recipient
are Resent-To/Resent-Cc, then To/Cc consulted. Aliases map the result; if nothing local
remains, the fallback recipient gets it.

Every recipient is a plain mailbox (`mailboxcheck.safe_reason`): a local part that no MTA rewrites into
another destination, in a local domain. A local part with non-ASCII letters counts only when
MailPlus offers SMTPUTF8 (`RoutingPolicy.smtputf8`) and it is one script's letters in NFC. A
local-domain address that is not plain (`%`, `!`, quotes, source routes, mixed scripts, ...) is
never shortened or repaired: its copy goes to the fallback recipient and the decision says why.
A message carrying a loop marker that this installation wrote (an HMAC under its own key) goes
to the fallback and is never routed by its headers again; a marker that does not verify is ignored.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from smartpop.collector.addresslist import candidates, received_for
from smartpop.collector.headers import LOOP_HEADER, Field, first, values
from smartpop.collector.mailboxcheck import safe_reason, usable

ENVELOPE_HEADERS = ["delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "x-rcpt-to"]
DISPLAY_NAMES = {"delivered-to": "Delivered-To", "x-original-to": "X-Original-To", "envelope-to": "Envelope-To",
                 "x-envelope-to": "X-Envelope-To", "x-rcpt-to": "X-RCPT-TO"}
LOOP_VERSION = "v2"


@dataclass(frozen=True)
class RoutingDecision:
    """Where one message goes, and why (for the log and the UI tester).

    `refused` lists addresses that named a local recipient but were not plain mailboxes,
    each with the reason; their copies went to the fallback recipient.
    """

    recipients: List[str]
    rule: str
    detail: str
    loop: bool = False
    refused: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RoutingPolicy:
    """The config facts routing needs, so that routing itself stays pure.

    `loop_key` is the installation's secret for the loop marker; repr=False keeps it out of
    any log line or traceback that prints a policy.
    """

    mode: str
    local_domains: Tuple[str, ...]
    aliases: Dict[str, List[str]] = field(default_factory=dict)
    fallback: Optional[str] = None
    deliver_to: Optional[str] = None
    own_addresses: Tuple[str, ...] = ()
    loop_key: bytes = field(default=b"", repr=False)
    smtputf8: bool = False  # MailPlus offers SMTPUTF8: a well-formed non-ASCII local part is a recipient

def _domain_of(candidate: str) -> str:
    return candidate.rpartition("@")[2].strip().rstrip(".").lower()


@dataclass
class _Sorted:
    """Addresses of one rule: local recipients, skipped ones and refused local ones, with reasons."""

    kept: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    refused: List[Tuple[str, str]] = field(default_factory=list)


def _sort(raw: Iterable[str], policy: RoutingPolicy) -> _Sorted:
    good, bad = usable(raw, policy.smtputf8)  # already without repeats
    result = _Sorted()
    for address in good:
        if address in policy.own_addresses:
            result.skipped.append(f"{address} (the collected mailbox itself)")
        elif address.rpartition("@")[2] not in policy.local_domains:
            result.skipped.append(f"{address} (not a local domain)")
        else:
            result.kept.append(address)
    for candidate, why in bad:
        if _domain_of(candidate) in policy.local_domains:
            result.refused.append((candidate, why))
        else:
            result.skipped.append(f"{candidate} (not a local domain, and {why})")
    return result


def expand_aliases(addresses: Sequence[str], aliases: Dict[str, List[str]]) -> List[str]:
    """Map addresses through `aliases` (nested, loop-safe), keeping order and dropping repeats."""
    result: List[str] = []
    seen: Set[str] = set()

    def visit(address: str, trail: Set[str]) -> None:
        targets = aliases.get(address)
        if targets is None or address in trail:
            if address not in seen:
                seen.add(address)
                result.append(address)
            return
        for target in targets:
            visit(target.lower(), trail | {address})

    for address in addresses:
        visit(address, set())
    return result


def message_id_of(fields: Sequence[Field]) -> str:
    """The topmost Message-ID with all whitespace removed ('' if absent), as the loop marker binds it."""
    return "".join((first(fields, "message-id") or "").split())


def loop_marker(key: bytes, message_id: str) -> str:
    """The X-SmartPop-Loop value this installation writes for a message with `message_id`."""
    # hmac.digest: the same HMAC-SHA256 in one C call (hmac.new builds two Python hash objects).
    mac = hmac.digest(key, b"smartpop-loop\0" + message_id.encode("utf-8", "surrogateescape"), "sha256")
    return f"{LOOP_VERSION} {mac.hex()[:32]}"


def loop_markers(fields: Sequence[Field], policy: RoutingPolicy) -> Tuple[bool, int]:
    """(True if a marker of this installation verifies, how many markers do not)."""
    found = values(fields, LOOP_HEADER)
    if not found:
        return False, 0
    if not policy.loop_key:
        return False, len(found)
    expected = loop_marker(policy.loop_key, message_id_of(fields)).encode("ascii")
    verified = False
    forged = 0
    for value in found:
        # compare_digest on every marker, so the time taken does not say which one was close.
        if hmac.compare_digest(" ".join(value.split()).encode("utf-8", "surrogateescape"), expected):
            verified = True
        else:
            forged += 1
    return verified, forged


def is_loop(fields: Sequence[Field], policy: RoutingPolicy) -> bool:
    """True if the message already passed through this SmartPop installation (its marker verifies)."""
    return loop_markers(fields, policy)[0]


def provider_block(fields: Sequence[Field]) -> List[Field]:
    """The fields the provider wrote: those above the topmost Received field, and that field.

    The provider's MTA prepends a Received field when it takes a message in (RFC 5321 4.4)
    and adds the envelope headers above it when it delivers; whatever the sender wrote lies
    below. Without any Received field there is no boundary and the whole header counts.
    """
    for index, item in enumerate(fields):
        if item.name == "received":
            return list(fields[:index + 1])
    return list(fields)


def _fallback(policy: RoutingPolicy, rule: str, detail: str, loop: bool = False,
              refused: Tuple[Tuple[str, str], ...] = ()) -> RoutingDecision:
    target = policy.fallback or policy.deliver_to
    return RoutingDecision([target] if target else [], rule, detail, loop, refused)


def _refusals(refused: Sequence[Tuple[str, str]]) -> str:
    return ", ".join(f"{address} ({why})" for address, why in refused)


def _final(policy: RoutingPolicy, found: _Sorted, rule: str, detail: str, notes: List[str]) -> RoutingDecision:
    """Aliases, then the plain-mailbox check of every target; refused copies go to the fallback."""
    expanded = expand_aliases(found.kept, policy.aliases)
    if expanded != found.kept:
        detail += f"; aliases -> {', '.join(expanded)}"
    refused = list(found.refused)
    targets: List[str] = []
    for address in expanded:
        # Alias targets come from the config: they must be plain local mailboxes too.
        why = safe_reason(address, policy.local_domains, policy.smtputf8)
        if why is None:
            targets.append(address)
        else:
            refused.append((address, f"alias target: {why}"))
    if notes:
        detail += "; " + "; ".join(notes)
    if not refused:
        return RoutingDecision(targets, rule, detail)
    target = policy.fallback or policy.deliver_to
    detail += f"; refused {_refusals(refused)}: to the fallback {target or '(none configured)'}"
    if not targets:
        return _fallback(policy, "fallback", detail, refused=tuple(refused))
    if target and target not in targets:
        targets.append(target)
    return RoutingDecision(targets, rule, detail, refused=tuple(refused))

def _by_envelope(block: Sequence[Field], policy: RoutingPolicy, notes: List[str],
                 skipped_notes: List[str]) -> Optional[RoutingDecision]:
    """The decision of the first provider envelope header (then Received `for`) naming a local recipient, or None.

    Each envelope header that names nobody local adds a line to `skipped_notes`, for the fallback's reason.
    """
    for name in ENVELOPE_HEADERS:
        found = values(block, name)
        if not found:
            continue
        result = _sort((c for v in found for c in candidates(v)), policy)
        if result.kept or result.refused:
            detail = f"{DISPLAY_NAMES[name]}: {', '.join(result.kept) or 'nobody plain'}"
            if result.skipped:
                detail += f" (skipped {', '.join(result.skipped)})"
            return _final(policy, result, DISPLAY_NAMES[name], detail, notes)
        why = f" ({', '.join(result.skipped)})" if result.skipped else ""
        skipped_notes.append(f"{DISPLAY_NAMES[name]} holds no local recipient{why}")
    if block and block[-1].name == "received":
        result = _sort(received_for(block[-1].value), policy)
        if result.kept or result.refused:
            detail = f"Received for: {', '.join(result.kept) or 'nobody plain'}"
            return _final(policy, result, "Received", detail, notes)
    return None


def _by_addressees(fields: Sequence[Field], policy: RoutingPolicy, notes: List[str]) -> Optional[RoutingDecision]:
    """The decision of Resent-To/Cc, then To/Cc, when no envelope header named a local recipient; or None."""
    for names, rule in ((("resent-to", "resent-cc"), "Resent-To/Cc"), (("to", "cc"), "To/Cc")):
        result = _sort((c for n in names for v in values(fields, n) for c in candidates(v)), policy)
        if result.kept or result.refused:
            detail = f"no envelope header; {rule}: {', '.join(result.kept) or 'nobody plain'}"
            if result.skipped:
                detail += f" (skipped {len(result.skipped)} non-local)"
            return _final(policy, result, rule, detail, notes)
    return None


def decide(fields: Sequence[Field], policy: RoutingPolicy) -> RoutingDecision:
    """Route one message from its parsed header fields."""
    looped, forged = loop_markers(fields, policy)
    if looped:
        return _fallback(policy, "loop", f"carries this installation's {LOOP_HEADER}: it already passed through "
                                         "SmartPop", loop=True)
    notes: List[str] = []
    if forged:
        notes.append(f"ignored {forged} {LOOP_HEADER} that this installation did not write")
    if policy.mode == "single":
        target = policy.deliver_to or ""
        detail = "; ".join([f"single-drop account: everything to {target}", *notes])
        return RoutingDecision([target] if target else [], "single", detail)
    block = provider_block(fields)
    deeper = [f for f in fields[len(block):] if f.name in ENVELOPE_HEADERS]
    if deeper:
        kinds = sorted({DISPLAY_NAMES[f.name] for f in deeper})
        notes.append(f"ignored {len(deeper)} envelope header(s) ({', '.join(kinds)}) below the provider's "
                     "first Received: the sender may have written them")
    skipped_notes: List[str] = []
    decision = _by_envelope(block, policy, notes, skipped_notes) or _by_addressees(fields, policy, notes)
    if decision is not None:
        return decision
    why = "; ".join(skipped_notes + notes) if skipped_notes or notes else "no envelope header and no local To/Cc"
    return _fallback(policy, "fallback", f"no local recipient found ({why})")
