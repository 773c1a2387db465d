"""Backend results in the page's language: relay state, connection tests, test mails, routing reasons.

The services speak English (the CLI and the log show their text as is). The pages say the same
in the admin's language; whatever a server or the system answered stays verbatim, in quotes,
so it can be searched for and is never mistaken for SmartPop's own words (issue 13 §6).
"""

from __future__ import annotations

import re
from typing import Any, List, Mapping, Optional, Pattern, Sequence, Tuple

from smartpop.log import redact
from smartpop.web import i18n

# The collector's failure lines (collector/transport.py describe(), pop3.py, imap.py): message
# id and the pattern whose groups fill it. `answer` is what the server or the system said.
FAILURES: List[Tuple[str, Pattern[str]]] = [(key, re.compile(pattern)) for key, pattern in (
    ("auth_refused", r"^login to (?P<server>\S+) refused: (?P<answer>.*)$"),
    ("tls_untrusted", r"^TLS certificate of (?P<server>\S+) not trusted: (?P<answer>.*)$"),
    ("tls_failed", r"^TLS handshake with (?P<server>\S+) failed: (?P<answer>.*)$"),
    ("timeout", r"^timed out talking to (?P<server>\S+)$"),
    ("refused", r"^connection to (?P<server>\S+) refused$"),
    ("unresolved", r"^cannot resolve host (?P<server>\S+): (?P<answer>.*)$"),
    ("lost", r"^connection to (?P<server>\S+) (?:lost|is closed)$"),
    ("network", r"^network error with (?P<server>\S+): (?P<answer>.*)$"),
    ("not_imap", r"^(?P<server>\S+) is not an IMAP server: (?P<answer>.*)$"),
    ("no_stls", r"^(?P<server>\S+) does not offer STLS \((?P<answer>.*)\)$"),
    ("starttls_failed", r"^(?P<server>\S+) STARTTLS failed: (?P<answer>.*)$"),
    ("dropped", r"^(?P<server>\S+) dropped the session: (?P<answer>.*)$"),
    ("ca_file", r"^cannot read ca_file (?P<server>.+?): (?P<answer>.*)$"),
)]
# collector.service.test_connection(): "POP3 host:995: <greeting>; 3 message(s) waiting[, folder X]"
_CONNECTED = re.compile(r"^(?P<protocol>[A-Z0-9]+) (?P<server>\S+): (?P<answer>.*); (?P<count>\d+) message\(s\) "
                        r"waiting(?:, folder (?P<folder>.*))?$", re.S)
# relay.service.send_test_mail(): "accepted by host:port for to (250 text)"
_ACCEPTED = re.compile(r"^accepted by (?P<server>\S+) for (?P<to>\S+) \((?P<answer>.*)\)$", re.S)
_MAIL_FAILURES: List[Tuple[str, Pattern[str]]] = [(key, re.compile(pattern, re.S)) for key, pattern in (
    ("mail_refused", r"^MailPlus at (?P<server>\S+) refused the test mail: (?P<answer>.*)$"),
    ("mail_refused_to", r"^MailPlus(?: at (?P<server>\S+))? refused (?P<to>[^:\s]+): (?P<answer>.*)$"),
    ("mail_unreachable", r"^cannot send the test mail via (?P<server>\S+): (?P<answer>.*)$"),
)]


def _t(lang: str, key: str, **values: Any) -> str:
    return i18n.translate(lang, key, **values)


def quoted(lang: str, text: str) -> str:
    """A server's or the system's own words, verbatim and visibly quoted („…“ or “…”)."""
    return _t(lang, "explain.quoted", text=redact(text.strip()))


def untranslated(lang: str, text: str) -> str:
    """SmartPop's own English line without a translation yet, marked as such and quoted."""
    return _t(lang, "explain.untranslated", text=redact(text.strip()))


def _match(patterns: Sequence[Tuple[str, Pattern[str]]], text: str) -> Optional[Tuple[str, Mapping[str, str]]]:
    for key, pattern in patterns:
        found = pattern.match(text.strip())
        if found:
            return key, {k: v or "" for k, v in found.groupdict().items()}
    return None


def connection_ok(lang: str, text: str) -> str:
    """collector.test_connection()'s success line in `lang`."""
    found = _CONNECTED.match(text.strip())
    if not found:
        return _t(lang, "explain.connection.ok_plain", answer=quoted(lang, text))
    parts = found.groupdict()
    message = _t(lang, "explain.connection.ok", protocol=parts["protocol"], server=parts["server"],
                 count=parts["count"], answer=quoted(lang, parts["answer"]))
    if parts.get("folder"):
        message += " " + _t(lang, "explain.connection.folder", folder=parts["folder"])
    return message


def connection_failed(lang: str, text: str, kind: str = "failed") -> str:
    """A ConnectError/AuthError line in `lang`; `kind` picks the sentence when no pattern fits."""
    found = _match(FAILURES, text)
    if found is None:
        return _t(lang, f"accounts.test.{kind}", detail=untranslated(lang, text))
    key, parts = found
    return _t(lang, f"explain.failure.{key}", server=parts.get("server", ""),
              answer=quoted(lang, parts.get("answer", "")))


def test_mail_ok(lang: str, text: str) -> str:
    """relay.send_test_mail()'s success line in `lang`."""
    found = _ACCEPTED.match(text.strip())
    if not found:
        return _t(lang, "relay.test.ok", detail=quoted(lang, text))
    parts = found.groupdict()
    return _t(lang, "explain.mail.accepted", server=parts["server"], to=parts["to"],
              answer=quoted(lang, parts["answer"]))


def test_mail_failed(lang: str, text: str) -> str:
    """relay.send_test_mail()'s failure line in `lang`."""
    found = _match(_MAIL_FAILURES, text)
    if found is None:
        return _t(lang, "relay.test.failed", detail=untranslated(lang, text))
    key, parts = found
    return _t(lang, f"explain.mail.{key}", server=parts.get("server") or "MailPlus", to=parts.get("to", ""),
              answer=quoted(lang, parts.get("answer", "")))


def relay_detail(lang: str, status: Mapping[str, Any]) -> str:
    """The relay state's explanation in `lang` (relay.service's `reason`, else its English `detail`)."""
    reason, detail = str(status.get("reason") or ""), str(status.get("detail") or "")
    if reason and i18n.catalog(lang).get(f"explain.relay.{reason}"):
        # The root task's own words (drift) and a settings error are quoted as they came.
        return _t(lang, f"explain.relay.{reason}", answer=quoted(lang, detail))
    return untranslated(lang, detail) if detail else ""


def routing_reason(lang: str, rule: str, recipients: Sequence[str], refused: Sequence[Tuple[str, str]],
                   loop: bool) -> str:
    """Why the routing tester decided as it did, in `lang` (the decision's `rule`, not its English trace)."""
    targets = ", ".join(recipients) or _t(lang, "common.none")
    if loop:
        text = _t(lang, "explain.routing.loop", targets=targets)
    elif rule == "single":
        text = _t(lang, "explain.routing.single", targets=targets)
    elif rule == "fallback":
        text = _t(lang, "explain.routing.fallback", targets=targets)
    elif rule in ("To/Cc", "Resent-To/Cc"):
        text = _t(lang, "explain.routing.visible", header=rule, targets=targets)
    elif rule == "Received":
        text = _t(lang, "explain.routing.received", targets=targets)
    else:
        text = _t(lang, "explain.routing.envelope", header=rule, targets=targets)
    if refused:
        text += " " + _t(lang, "explain.routing.refused", addresses=", ".join(a for a, _ in refused))
    return text


# The collector's per-run summary (collector/runner.py, end of _run_locked).
_RUN_SUMMARY = re.compile(
    r"^(?P<account>[^:]+): (?P<collected>\d+) collected \((?P<fallback>\d+) to fallback, (?P<dupes>\d+) duplicate "
    r"copies skipped, (?P<again>\d+) copies in doubt delivered again\), (?P<deleted>\d+) deleted on the server, "
    r"(?P<waiting>\d+|unknown) waiting$")


def log_line(lang: str, message: str) -> str:
    """A log record as the Logs page shows it: SmartPop's run summary in the page's language, else as logged."""
    if lang == "en":
        return message
    match = _RUN_SUMMARY.match(message)
    if match is None:
        return message
    values = match.groupdict()
    if values["waiting"] == "unknown":
        values["waiting"] = _t(lang, "common.unknown")
    return _t(lang, "log.run_summary", **values)

