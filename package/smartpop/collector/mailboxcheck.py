"""Pure: the plain-mailbox guard, whether an address may be a RCPT at all (docs/ROUTING.md).

A plain mailbox is a local part that no MTA rewrites into another destination, in a plain
domain. A local part with non-ASCII letters counts only when MailPlus offers SMTPUTF8 and it
is one script's letters in NFC. Routing (`recipients`) and the last check before `RCPT`
(`delivery.screen`) both ask this module, so the two can never disagree.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, List, Optional, Set, Tuple

# A local part SmartPop hands to MailPlus: ASCII letters, digits and . _ + = -, as a dot-atom
# that does not start with '-' (Postfix refuses those: allow_min_user). Everything else is
# either rewritten by MTAs into another destination ('%' percent hack, '!' bang path, '@' and
# ':' source routes), handed to programs ('|', '/') or needs quoting ('"', '\\', spaces). A local
# part with non-ASCII letters needs SMTPUTF8 (RFC 6531) and passes only `_utf8_reason`.
_SAFE_LOCAL = re.compile(r"^[A-Za-z0-9_+=][A-Za-z0-9_+=-]*(?:\.[A-Za-z0-9_+=-]+)*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
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
NO_SMTPUTF8 = "non-ASCII local part (MailPlus does not offer SMTPUTF8)"
# Scripts that one name legitimately mixes; any other mix of scripts may imitate another user
# ("anna" with a Cyrillic U+0430 for the first "a"). The script is the first word of the Unicode character name.
_SCRIPT_ALIASES = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "HIRAGANA": "KANA", "KATAKANA": "KANA",
                   "KATAKANA-HIRAGANA": "KANA"}
_SCRIPT_MIXES = ({"HAN", "KANA"}, {"HAN", "HANGUL"})


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


def _local_reason(local: str, ascii_only: bool) -> Optional[str]:
    """Why a non-empty local part is not plain, or None (non-ASCII ones are checked as for SMTPUTF8)."""
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
    why = _local_reason(local, ascii_only)
    if why is not None:
        return why
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


def usable(raw: Iterable[str], smtputf8: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
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
