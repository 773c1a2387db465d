"""Pure parse/render of Postfix main.cf/master.cf text with one SmartPop-managed block.

Everything outside the block is kept byte-for-byte: we only ever cut out our own block and
append a fresh one at the end (Postfix keeps the last definition of a parameter).
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

BEGIN = "# BEGIN SMARTPOP RELAY (managed by SmartPop, do not edit; removed by 'smartpop relay rollback')"
END = "# END SMARTPOP RELAY"
_PARAM = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$")


def decode(data: bytes) -> str:
    """Bytes to text such that encode(decode(b)) == b for any input."""
    return data.decode("utf-8", "surrogateescape")


def encode_bytes(text: str) -> bytes:
    """Text back to the exact original bytes."""
    return text.encode("utf-8", "surrogateescape")


def logical_lines(text: str) -> List[str]:
    """Join continuation lines (leading whitespace) into logical lines; drop comments/blanks."""
    result: List[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and result:
            result[-1] += " " + line.strip()
        else:
            result.append(line.strip())
    return result


def parse_params(text: str) -> Dict[str, str]:
    """Parameters of a main.cf as Postfix reads them: last definition wins."""
    params: Dict[str, str] = {}
    for line in logical_lines(text):
        match = _PARAM.match(line)
        if match:
            params[match.group(1)] = match.group(2).strip()
    return params


def split_blocks(text: str) -> Tuple[str, List[str]]:
    """Return (text without any managed block, list of the blocks found)."""
    lines = text.splitlines(keepends=True)
    kept: List[str] = []
    blocks: List[str] = []
    current: List[str] = []
    inside = False
    for line in lines:
        stripped = line.rstrip("\r\n")
        if not inside and stripped.startswith("# BEGIN SMARTPOP RELAY"):
            inside, current = True, [line]
        elif inside:
            current.append(line)
            if stripped == END:
                inside = False
                blocks.append("".join(current))
        else:
            kept.append(line)
    if inside:  # an unterminated block: treat it as ours to the end of the file
        blocks.append("".join(current))
    return "".join(kept), blocks


def render_block(body_lines: List[str]) -> str:
    """The managed block text for the given body lines."""
    return "".join(line + "\n" for line in [BEGIN, *body_lines, END])


def with_block(text: str, body_lines: List[str]) -> str:
    """`text` with exactly one managed block holding body_lines, at the end (no block if empty)."""
    base, blocks = split_blocks(text)
    if not body_lines:
        return base if blocks else text
    block = render_block(body_lines)
    if len(blocks) == 1 and blocks[0] == block and text.endswith(block):
        return text  # already in place: applying twice changes nothing
    # Our block was appended after a newline we may have added; never touch other lines.
    if base and not base.endswith("\n"):
        base += "\n"
    return base + block


def block_body(text: str) -> List[str]:
    """Body lines of the (last) managed block, or [] if none."""
    _, blocks = split_blocks(text)
    if not blocks:
        return []
    lines = blocks[-1].splitlines()
    return [line for line in lines if line != END and not line.startswith("# BEGIN SMARTPOP RELAY")]
