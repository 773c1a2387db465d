"""Pure routing: which local mailboxes get a collected message (docs/ROUTING.md).

Multidrop: the first envelope header that names a local recipient decides, in the order
Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, X-RCPT-TO, then a Received
`for <...>` clause. Only what the provider wrote counts: envelope headers above the topmost
Received field, and that Received field's `for` clause; anything deeper may come from the
sender. The catch-all's own address and non-local domains are skipped; a header holding
only such addresses counts as absent. Only when no envelope header names a local recipient
are Resent-To/Resent-Cc, then To/Cc consulted. Aliases map the result; if nothing local
remains, the fallback recipient gets it.

Every recipient is a plain mailbox (`safe_reason`): a local part that no MTA rewrites into
another destination, in a local domain. A local part with non-ASCII letters counts only when
MailPlus offers SMTPUTF8 (`RoutingPolicy.smtputf8`) and it is one script's letters in NFC. A
local-domain address that is not plain (`%`, `!`, quotes, source routes, mixed scripts, ...) is
never shortened or repaired: its copy goes to the fallback recipient and the decision says why.
A message carrying a loop marker that this installation wrote (an HMAC under its own key) goes
to the fallback and is never routed by its headers again; a marker that does not verify is ignored.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from smartpop.collector.headers import LOOP_HEADER, Field, decode_words, first, values

ENVELOPE_HEADERS = ["delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "x-rcpt-to"]
DISPLAY_NAMES = {"delivered-to": "Delivered-To", "x-original-to": "X-Original-To", "envelope-to": "Envelope-To",
                 "x-envelope-to": "X-Envelope-To", "x-rcpt-to": "X-RCPT-TO"}

# A local part SmartPop hands to MailPlus: ASCII letters, digits and . _ + = -, as a dot-atom
# that does not start with '-' (Postfix refuses those: allow_min_user). Everything else is
# either rewritten by MTAs into another destination ('%' percent hack, '!' bang path, '@' and
# ':' source routes), handed to programs ('|', '/') or needs quoting ('"', '\\', spaces). A local
# part with non-ASCII letters needs SMTPUTF8 (RFC 6531) and passes only `_utf8_reason`.
_SAFE_LOCAL = re.compile(r"^[A-Za-z0-9_+=][A-Za-z0-9_+=-]*(?:\.[A-Za-z0-9_+=-]+)*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\]|\\.)*"@[^\s,;<>()"]+')
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_RECEIVED_FOR = re.compile(r"\bfor\s+<?\s*([^\s<>;()]+@[^\s<>;()]+?)\s*>?(?=[\s;)]|$)",
                           re.IGNORECASE | re.ASCII)  # \s as in SMTP: a U+00A0 inside a name does not split it
_ASCII_SPACE = re.compile(r"[ \t\r\n]+")
_SPECIAL = {
    "%": "'%' in the local part (percent hack: an MTA may relay it to the domain after the '%')",
    "!": "'!' in the local part (bang path: an MTA may relay it to the host before the '!')",
    "@": "'@' in the local part (an MTA may route it to the domain inside it)",
    '"': "quoted local part (may hide '@', '%' or '!' from a check)",
    ":": "':' in the local part (source route syntax)",
    "|": "'|' in the local part (a pipe to a program)",
    "/": "'/' in the local part (a file or program path)",
    "\\": "'\\' in the local part (quoting)",
}
LOOP_VERSION = "v2"
NO_SMTPUTF8 = "non-ASCII local part (MailPlus does not offer SMTPUTF8)"
# Scripts that one name legitimately mixes; any other mix of scripts may imitate another user
# ("anna" with a Cyrillic U+0430 for the first "a"). The script is the first word of the Unicode character name.
_SCRIPT_ALIASES = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "HIRAGANA": "KANA", "KATAKANA": "KANA",
                   "KATAKANA-HIRAGANA": "KANA"}
_SCRIPT_MIXES = ({"HAN", "KANA"}, {"HAN", "HANGUL"})


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


def _script(ch: str) -> str:
    word = unicodedata.name(ch, "?").split(" ")[0]
    return _SCRIPT_ALIASES.get(word, word)


def _utf8_reason(local: str) -> Optional[str]:
    """Why a local part with non-ASCII characters is not a plain mailbox, or None (checked for SMTPUTF8)."""
    if unicodedata.normalize("NFC", local) != local:
        return "non-ASCII local part not in Unicode NFC"
    if unicodedata.normalize("NFKC", local) != local:
        # Fullwidth, styled (mathematical) or ligature letters: they stand for other letters.
        return "compatibility character in the local part (fullwidth, styled or ligature letter)"
    if len(local.encode("utf-8")) > 64:
        return "local part longer than 64 octets"
    scripts: Set[str] = set()
    after_letter = False
    for ch in local:
        if ord(ch) < 128:
            if ch.isalpha():
                scripts.add("LATIN")
            after_letter = ch.isalpha()
            continue
        category = unicodedata.category(ch)
        script = _script(ch)
        if category.startswith("L") and script != "MODIFIER":
            scripts.add(script)
            after_letter = True
        elif category.startswith("M") and after_letter:
            if not unicodedata.name(ch, "").startswith("COMBINING"):
                scripts.add(script)
        else:
            # Digits other than 0-9, spaces, format characters (U+200B, U+202E), punctuation...
            what = "combining mark not after a letter" if category.startswith("M") else f"category {category}"
            return f"character U+{ord(ch):04X} in the local part ({what})"
    if len(scripts) > 1 and not any(scripts <= mix for mix in _SCRIPT_MIXES):
        return f"mixed scripts in the local part ({', '.join(sorted(s.title() for s in scripts))})"
    return None


def safe_reason(address: str, domains: Optional[Iterable[str]] = None, smtputf8: bool = False) -> Optional[str]:
    """Why `address` must not be a RCPT, or None for a plain mailbox (in `domains`; non-ASCII only with `smtputf8`)."""
    if "@" not in address:
        return "not an address (no '@')"
    if address.startswith("@"):
        return "source route ('@host:...')"
    local, _, domain = address.rpartition("@")
    if not local:
        return "empty local part"
    ascii_only = local.isascii()
    if not ascii_only and not smtputf8:
        # The address's own fault first: SMTPUTF8 would not make a mixed-script name acceptable.
        return safe_reason(address, domains, smtputf8=True) or NO_SMTPUTF8
    for ch in local:
        if ch in _SPECIAL:
            return _SPECIAL[ch]
    if len(local) > 64:
        return "local part longer than 64 characters"
    if not ascii_only:
        why = _utf8_reason(local)
        if why is not None:
            return why
    # Non-ASCII letters (and their marks) stand in as 'a': the dot-atom rule is the ASCII one.
    skeleton = local if ascii_only else "".join(ch if ord(ch) < 128 else "a" for ch in local)
    if not _SAFE_LOCAL.match(skeleton):
        bad = sorted({ch for ch in skeleton if not (ch.isalnum() or ch in "._+=-")})
        if bad:
            return f"character {bad[0]!r} in the local part"
        return "local part starts with '.' or '-', ends with '.' or has '..'"
    if not _DOMAIN.match(domain):
        return f"domain {domain!r} is not a plain domain name"
    if domains is not None and domain.lower() not in {d.lower() for d in domains}:
        return f"domain {domain.lower()} is not a local domain"
    return None


def normalise(address: str) -> Optional[str]:
    """Lower-case a bare address and check that it is a plain mailbox; None if it is not."""
    text = address.strip().strip("<>").strip().rstrip(".")
    if safe_reason(text) is not None:
        return None
    return text.lower()


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


def _candidate(item: str) -> str:
    """The one address an address-list item names, taken whole ('' if none)."""
    start, end = item.rfind("<"), item.rfind(">")
    if start != -1 and end > start:
        return item[start + 1:end].strip()
    quoted = _QUOTED_LOCAL.findall(item)
    if quoted:
        return quoted[-1]
    # A bare address is the whole whitespace-separated word that holds the '@': a pattern
    # that matched only its ASCII tail turned "rüben@" into "ben@", another user.
    # Words end only at ASCII whitespace: str.split() also splits at U+00A0, U+2028, U+3000 and
    # \x1c-\x1f, which turned "rü<U+00A0>ben@" into "ben@" too.
    words = [w for w in _ASCII_SPACE.split(_QUOTED.sub(" ", item)) if "@" in w]
    return words[-1] if words else ""


def candidates(value: str) -> List[str]:
    """Every address-like word of a header value, as written (RFC 2047 decoded, groups and comments handled)."""
    text = _strip_comments(decode_words(value))
    found: List[str] = []
    seen: Set[str] = set()  # lists of thousands of addresses: a list scan per item would be quadratic
    for raw_item in _split_items(text):
        # Group syntax "name: a@b, c@d;" leaves "name: a@b" as the first item.
        item = raw_item
        head, colon, rest = item.partition(":")
        if colon and "<" not in head and "@" not in head and '"' not in head:
            item = rest
        candidate = _candidate(item).rstrip(".")
        if candidate and candidate not in seen:
            seen.add(candidate)
            found.append(candidate)
    return found


def _usable(raw: Iterable[str], smtputf8: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Split candidates into (plain addresses, lower-cased, NFC; [(candidate, why not plain)])."""
    good: List[str] = []
    seen: Set[str] = set()
    bad: List[Tuple[str, str]] = []
    for written in raw:
        # The same name in decomposed form ("u" + U+0308) is the same mailbox: compare and send NFC.
        candidate = written if written.isascii() else unicodedata.normalize("NFC", written)
        why = safe_reason(candidate, smtputf8=smtputf8)
        if why is None and candidate.isascii() and not written.isascii():
            why = "non-ASCII character that stands for an ASCII one (e.g. U+212A KELVIN SIGN for 'K')"
        if why is None:
            address = candidate.lower()
            if not address.isascii():
                # Lower-casing may decompose ("İ" -> "i" + U+0307): the result must pass too.
                address = unicodedata.normalize("NFC", address)
                why = safe_reason(address, smtputf8=smtputf8)
                if why is not None:
                    bad.append((written, why))
                    continue
            if address not in seen:
                seen.add(address)
                good.append(address)
        else:
            bad.append((written, why))
    return good, bad


def extract_addresses(value: str) -> List[str]:
    """Every plain address in a header value (the others are left out)."""
    return _usable(candidates(value))[0]


def received_for(value: str) -> List[str]:
    """Addresses in a Received header's `for <...>` clause, as written."""
    found: List[str] = []
    for match in _RECEIVED_FOR.finditer(value):
        candidate = match.group(1).rstrip(".")
        if candidate not in found:
            found.append(candidate)
    return found


def _domain_of(candidate: str) -> str:
    return candidate.rpartition("@")[2].strip().rstrip(".").lower()


@dataclass
class _Sorted:
    """Addresses of one rule: local recipients, skipped ones and refused local ones, with reasons."""

    kept: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    refused: List[Tuple[str, str]] = field(default_factory=list)


def _sort(raw: Iterable[str], policy: RoutingPolicy) -> _Sorted:
    good, bad = _usable(raw, policy.smtputf8)  # already without repeats
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
    for names, rule in ((("resent-to", "resent-cc"), "Resent-To/Cc"), (("to", "cc"), "To/Cc")):
        result = _sort((c for n in names for v in values(fields, n) for c in candidates(v)), policy)
        if result.kept or result.refused:
            detail = f"no envelope header; {rule}: {', '.join(result.kept) or 'nobody plain'}"
            if result.skipped:
                detail += f" (skipped {len(result.skipped)} non-local)"
            return _final(policy, result, rule, detail, notes)
    why = "; ".join(skipped_notes + notes) if skipped_notes or notes else "no envelope header and no local To/Cc"
    return _fallback(policy, "fallback", f"no local recipient found ({why})")
