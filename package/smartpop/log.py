"""Logging setup: one format, a size-rotated file under DATA, and secret redaction."""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
from pathlib import Path
from typing import Iterable, List, Match, Optional, Set

REDACTED = "********"

_secrets: Set[str] = set()
_secrets_lock = threading.Lock()
# _secrets longest first, rebuilt on registration: every log line is checked against it, and
# sorting the set per line showed up in the throughput profile.
_by_length: List[str] = []

# Catches secrets that were never registered, e.g. echoed by a server or a library.
_KEY_VALUE = re.compile(
    r"(?i)(\b(?:pass(?:word)?|passwd|secret|token|auth)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]+)"
)
# Every _KEY_VALUE match contains one of [:=] and one of these words in str.casefold() form
# (which also folds the regex's case-insensitive twins such as U+017F LONG S and U+212A KELVIN
# SIGN): a line without them skips the regex, as most lines (one per collected message) do.
_KEY_WORDS = ("pass", "secret", "token", "auth")
# `accounts[0].auth: is not a known setting`: a key that ends a config path, then ": ", is how
# SmartPop names a setting in its own messages; what follows is prose, not the setting's value.
_CONFIG_PATH_KEY = re.compile(r"[.\]]\w+: $")


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret strings so that every log line masks them."""
    with _secrets_lock:
        for value in values:
            # Very short values would mask ordinary words; the config demands longer ones.
            if value and len(value) >= 3:
                _secrets.add(value)
        _by_length[:] = sorted(_secrets, key=len, reverse=True)


def forget_secrets(values: Iterable[str]) -> None:
    """Stop masking these values: superseded OAuth2 tokens, which would otherwise pile up every hour."""
    with _secrets_lock:
        for value in values:
            _secrets.discard(value)
        _by_length[:] = sorted(_secrets, key=len, reverse=True)


def redact_known(text: str) -> str:
    """Mask every registered secret value in `text` (for SmartPop's own messages, which quote none)."""
    with _secrets_lock:
        known = _by_length[:] if _by_length else ()
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(text: str) -> str:
    """Mask every registered secret and every key=value password in `text`."""
    def mask(match: Match[str]) -> str:
        if _CONFIG_PATH_KEY.search(match.string, 0, match.end(1)):
            return match.group(0)
        return match.group(1) + REDACTED

    text = redact_known(text)
    if "=" not in text and ":" not in text:
        return text
    folded = text.casefold()
    if not any(word in folded for word in _KEY_WORDS):
        return text
    return _KEY_VALUE.sub(mask, text)


# Everything a reader (str.splitlines, a terminal, a browser) may take for a line break or a
# control: C0, DEL, C1 (NEL is 0x85), U+2028/2029, bidi overrides, and lone surrogates (which
# the UTF-8 log file could not even store). Header-derived text carries any of them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Continuation lines of a record (a traceback) start with this, so no text inside one can pass
# for the "<date> <LEVEL> <name>: " start of a record of its own.
CONTINUATION = "  "


def _escape_char(match: Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: every control or line-separator character written as a visible escape."""
    # Every _UNSAFE character is in Unicode category Cc, Cf, Cs, Zl or Zp, none printable: a
    # printable line (nearly all) needs no regex pass.
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escape_char, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with secrets masked, as exactly one line plus continuations.

    The message itself (where Message-IDs, addresses and server answers end up) is escaped to
    one line; a traceback keeps its lines, each escaped and indented by CONTINUATION.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Format the record once, redact and escape it, and freeze the result."""
        if getattr(record, "smartpop_redacted", False):
            return True  # every handler has this filter: the first one did the work
        message = escape_controls(redact(record.getMessage()))
        extra: List[str] = []
        if record.exc_info:
            extra.append(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            extra.append(record.stack_info)
            record.stack_info = None
        for block in extra:
            for line in redact(block).split("\n"):
                message += "\n" + CONTINUATION + escape_controls(line)
        record.msg = message
        record.args = None
        record.smartpop_redacted = True
        return True


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _OnceFormatter(logging.Formatter):
    """Formats a record once for all the handlers that share this formatter (file and stderr)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, made by the first handler and reused by the others."""
        cached = record.__dict__.get("smartpop_line")
        if cached is not None and cached[0] is self:
            return str(cached[1])
        line = super().format(record)
        record.smartpop_line = (self, line)
        return line


def setup_logging(log_file: Optional[Path] = None, level: int = logging.INFO, stderr: bool = True,
                  stderr_level: int = logging.NOTSET) -> None:
    """Configure the root logger once: optional rotating file, optional stderr (from `stderr_level` up)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    # FORMAT shows none of the caller's file and line, thread or process: not looking them up
    # for every record (a frame walk, a getpid) is the logging HOWTO's "Optimization" advice.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = _OnceFormatter(FORMAT)
    handlers: List[logging.Handler] = []
    if log_file is not None:
        file_handler = logging.handlers.RotatingFileHandler(
            str(log_file), maxBytes=2 * 1024 * 1024, backupCount=3, encoding="utf-8"
        )
        handlers.append(file_handler)
    if stderr:
        console = logging.StreamHandler()
        console.setLevel(stderr_level)
        handlers.append(console)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    if log_file is not None and log_file.exists():
        log_file.chmod(0o600)
