"""The round trip (issue 15 check 3): a test message out through the provider and back into the collector.

`start()` sends one message through the relay provider's submission server (the relay's login
and TLS rules, health/probes.py) to an address the collecting account receives. It carries a
random token in the X-SmartPop-Roundtrip header and in its Message-ID; the pending trip is
recorded first in DATA/health-state.json (atomic, under a file lock: the web server and the
collector both write it). `consume()` is the collector's one hook (collector/placer.py,
Placer.place): a fetched message whose token and Message-ID match a pending, unexpired
trip of this installation is recorded as arrived and consumed (marked done and deleted like a
collected message, delivered to nobody). Anything else, an unknown, expired or forged token
included, is routed as usual: a header alone can never make a message disappear.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

from smartpop import fsutil
from smartpop.collector import headers
from smartpop.collector.policy import delivery_domains
from smartpop.config.schema import Config
from smartpop.errors import ConfigError, LockBusy, ProtocolError
from smartpop.health.findings import OK, PROBLEM, WARNING, Finding, make, phrase, phrases
from smartpop.paths import Paths

log = logging.getLogger(__name__)

HEADER = "X-SmartPop-Roundtrip"
_HEADER_LOWER = HEADER.lower()
# A test message that is not back within this time is a problem (issue 15: "a few minutes").
EXPIRY = 600.0
# A copy of a trip that already arrived (fetched again after a crash before its DELE, or a
# provider's duplicate) is consumed too for this long, instead of reaching a mailbox.
ARRIVED_GRACE = 86400.0
KEEP = 10  # trips remembered in the state file (the newest first)
LOCK_TIMEOUT = 5.0
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
# Verdict headers the provider adds on arrival; the topmost ones are the provider's own.
VERDICT_HEADERS = ("authentication-results", "arc-authentication-results", "received-spf", "dkim-signature")
_VERDICTS_PER_HEADER = 3
_VERDICT_LEN = 400
_RESULT = re.compile(r"\b(spf|dkim|dmarc)=([a-z]+)", re.IGNORECASE)
_DKIM_TAG = re.compile(r"\b([ds])=([^;\s]+)")

PENDING, ARRIVED, FAILED = "pending", "arrived", "failed"


def _state_file(paths: Paths) -> Any:
    return paths.data / "health-state.json"


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    paths.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    with fsutil.locked(paths.locks / "health-state.lock", timeout=LOCK_TIMEOUT):
        yield


def _read(paths: Paths) -> Dict[str, Any]:
    try:
        data = json.loads(_state_file(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(paths: Paths, state: Dict[str, Any]) -> None:
    fsutil.atomic_write(_state_file(paths), (json.dumps(state, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _number(value: Any) -> float:
    """A time stamp from the state file; 0 for anything that is not a number (a hand-edited or foreign file)."""
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _trips(state: Dict[str, Any]) -> List[Dict[str, Any]]:
    trips = state.get("round_trips")
    return [t for t in trips if isinstance(t, dict)] if isinstance(trips, list) else []


def trips(paths: Paths) -> List[Dict[str, Any]]:
    """The remembered round trips, newest first (tokens included: never show these to a browser)."""
    return _trips(_read(paths))


def _update(paths: Paths, token: str, changes: Dict[str, Any]) -> None:
    with _locked(paths):
        state = _read(paths)
        for trip in _trips(state):
            if trip.get("token") == token:
                trip.update(changes)
        _write(paths, state)


def _local_address(address: str, domains: Sequence[str]) -> bool:
    return "@" in address and address.rpartition("@")[2].lower() in domains


def addresses(config: Config) -> Dict[str, str]:
    """Where the test message goes (an address the collecting account receives) and whom it is from."""
    domains = [d.lower() for d in delivery_domains(config)]
    enabled = [a for a in config.accounts if a.enabled]
    # The catch-all first: its own address certainly reaches it; a per-user box next.
    ordered = [a for a in enabled if a.mode == "multidrop"] + [a for a in enabled if a.mode != "multidrop"]
    to = next((a.username for a in ordered if "@" in a.username), "")
    if not to:
        raise ConfigError("the round trip needs an account whose user name is its e-mail address (the catch-all "
                          "mailbox); add one on the Accounts page", key="accounts")
    relay = config.relay
    # The provider usually accepts only its customer's own addresses as sender: the relay login
    # itself when it is one, else an address of a local domain.
    candidates = [relay.username, config.fallback_recipient or ""]
    sender = next((c for c in candidates if _local_address(c, domains)), "")
    if not sender and domains:
        sender = f"postmaster@{domains[0]}"
    if not sender:
        raise ConfigError("the round trip needs a local domain to send from; add one on the Routing page",
                          key="local_domains")
    return {"to": to, "from": sender}


def _message(token: str, sender: str, to: str, now: float) -> bytes:
    # email.message/policy and smtplib load only here: the collector imports this module for
    # consume(), and every fetch and the idle service would otherwise carry them (~13 ms, memory).
    from email.message import EmailMessage
    from email.policy import SMTP as SMTP_POLICY
    from email.utils import formatdate

    message = EmailMessage(policy=SMTP_POLICY)
    domain = sender.rpartition("@")[2]
    message["From"] = f"SmartPop <{sender}>"
    message["To"] = to
    message["Subject"] = "SmartPop round trip test"
    message["Date"] = formatdate(now, localtime=True)
    message["Message-ID"] = f"<roundtrip.{token}@{domain}>"
    message[HEADER] = token
    message.set_content("SmartPop sent this message through your provider to check that outgoing mail leaves\n"
                        "and incoming mail is collected. SmartPop takes it out of the mailbox when it collects\n"
                        "it; nobody receives it. If you see it in a mailbox, the round trip had expired.\n")
    return message.as_bytes()


def start(paths: Paths, config: Config, ca_file: Optional[str] = None, now: Optional[float] = None,
          timeout: Optional[float] = None) -> Dict[str, Any]:
    """Send one test message through the relay provider and record the pending trip; return the trip."""
    from smartpop.health import probes

    if timeout is None:
        timeout = probes.TIMEOUT
    relay = config.relay
    if not relay.host or not relay.username:
        raise ConfigError("the round trip sends through the relay provider's submission server; enter the relay "
                          "server and login on the Relay page first", key="relay")
    where = addresses(config)
    moment = time.time() if now is None else now
    token = secrets.token_hex(16)
    trip: Dict[str, Any] = {"token": token, "state": PENDING, "sent_at": moment, "expires_at": moment + EXPIRY,
                            "to": where["to"], "from": where["from"], "via": f"{relay.host}:{relay.port}",
                            "reply": "", "error": ""}
    # Recorded before the message leaves: a fast provider and collector must find it pending.
    with _locked(paths):
        state = _read(paths)
        state["round_trips"] = [trip, *_trips(state)][:KEEP]
        _write(paths, state)
    if ca_file is None:
        from smartpop.relay.trust import find_ca_file

        ca_file = find_ca_file()
    envelope = probes.Envelope(where["from"], where["to"], _message(token, where["from"], where["to"], moment))
    result = probes.probe_relay_login(relay.host, relay.port, relay.security, relay.username, relay.password,
                                      ca_file, timeout=timeout, local_hostname=socket.gethostname() or "localhost",
                                      envelope=envelope)
    # Some servers (Exchange, Microsoft 365) echo the Message-ID, and so the token, in their
    # answer to DATA; the reply is shown on the Health page, where the token must never appear.
    reply = _without_token(f"{result.reply_code} {result.reply}".strip() if result.reply_code else "", token)
    changes: Dict[str, Any] = {"reply": reply}
    if not result.sent:
        changes.update(state=FAILED, error=_without_token(result.error or "not sent", token))
    _update(paths, token, changes)
    trip.update(changes)
    log.info("round trip %s: %s via %s for %s (%s)", token[:8], "sent" if result.sent else "not sent",
             trip["via"], trip["to"], reply or result.error)
    return trip


def _without_token(text: str, token: str) -> str:
    return re.sub(re.escape(token), "<token>", text, flags=re.IGNORECASE)


def _verdicts(fields: Sequence[headers.Field]) -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    for name in VERDICT_HEADERS:
        values = headers.values(fields, name)[:_VERDICTS_PER_HEADER]
        if name == "dkim-signature":
            # The signature itself is noise: who signed (d=) with which selector (s=) is the verdict.
            values = [" ".join(f"{k}={v}" for k, v in _DKIM_TAG.findall(value)) for value in values]
        if values:
            found[name] = [headers.safe_header_text(v, _VERDICT_LEN) for v in values]
    return found


def consume(paths: Paths, fields: Sequence[headers.Field], account: str = "", now: Optional[float] = None) -> bool:
    """Whether this fetched message is a pending round trip of this installation (then it is recorded, not delivered).

    Raises ProtocolError when the state cannot be read now: the message then stays on the
    server for the next run (a test message must not land in a mailbox by accident).
    """
    # The fast path for every other message: one pass over the header names, no file access.
    tokens = [f.value.strip().lower() for f in fields if f.name == _HEADER_LOWER]
    if not tokens:
        return False
    message_id = (headers.first(fields, "message-id") or "").lower()
    moment = time.time() if now is None else now
    candidates = [t for t in tokens if _TOKEN.match(t) and f"roundtrip.{t}@" in message_id]
    match: Optional[Dict[str, Any]] = None
    if not candidates:
        # No well-formed token that the Message-ID repeats: it cannot be ours, so neither the lock
        # nor the file is touched (a busy lock must not hold a stranger's message on the server).
        log.warning("%s: a message with a malformed or mismatched %s header is delivered as usual",
                    account or "collector", HEADER)
        return False
    try:
        with _locked(paths):
            state = _read(paths)
            for trip in _trips(state):
                token = str(trip.get("token", ""))
                if not any(secrets.compare_digest(token, c) for c in candidates):
                    continue
                if trip.get("state") == PENDING and moment < _number(trip.get("expires_at")):
                    match = trip
                elif trip.get("state") == ARRIVED and moment < _number(trip.get("arrived_at")) + ARRIVED_GRACE:
                    match = trip
            if match is not None and match.get("state") == PENDING:
                match.update(state=ARRIVED, arrived_at=moment, account=account, verdicts=_verdicts(fields))
                _write(paths, state)
    except (OSError, LockBusy) as exc:
        raise ProtocolError(f"round-trip state not readable now ({exc}); the message stays on the server") from None
    if match is None:
        # Unknown, expired or forged: deliver as usual (a header must not make mail vanish).
        log.warning("%s: a message with a %s header matches no pending round trip of this installation (unknown, "
                    "expired or forged token); it is delivered as usual", account or "collector", HEADER)
        return False
    log.info("%s: round trip %s came back after %.0f s; consumed, delivered to nobody", account or "collector",
             str(match.get("token", ""))[:8], _number(match.get("arrived_at", moment)) - _number(match.get("sent_at")))
    return True


def _clock(stamp: float) -> str:
    return time.strftime("%H:%M", time.localtime(stamp))


def _texts(values: Any) -> List[str]:
    """The strings of a recorded header list (anything else in a damaged state file is skipped)."""
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def verdict_summary(verdicts: Dict[str, List[str]]) -> Dict[str, str]:
    """spf/dkim/dmarc results from the topmost Authentication-Results (else Received-SPF) header."""
    results: Dict[str, str] = {}
    for value in _texts(verdicts.get("authentication-results"))[:1]:
        for method, outcome in _RESULT.findall(value):
            results.setdefault(method.lower(), outcome.lower())
    spf_header = _texts(verdicts.get("received-spf"))
    if "spf" not in results and spf_header:
        results["spf"] = spf_header[0].split(None, 1)[0].lower() if spf_header[0].strip() else ""
    return results


def check_round_trip(trip: Optional[Dict[str, Any]], now: float) -> Optional[Finding]:
    """The finding for the newest round trip (None before the first one): pending, ok, or a problem with the reason."""
    if trip is None:
        return None
    sent_at = _number(trip.get("sent_at"))
    expires_at = _number(trip.get("expires_at")) or sent_at + EXPIRY
    via, to = str(trip.get("via", "")), str(trip.get("to", ""))
    token = str(trip.get("token") or "")
    # A trip recorded before replies were cleaned may still hold the token in them (docs/HEALTH.md).
    trip = {**trip, **{k: _without_token(str(trip.get(k) or ""), token) if token else str(trip.get(k) or "")
                       for k in ("reply", "error")}}
    details: Dict[str, Any] = {k: trip.get(k) for k in ("state", "sent_at", "expires_at", "arrived_at", "to",
                                                          "from", "via", "reply", "error", "account", "verdicts")}
    if trip.get("state") == FAILED:
        return make("round_trip", to, PROBLEM, "health.msg.round_trip.failed", details, via=via,
                    clock=_clock(sent_at), error=f"{trip.get('error')} {trip.get('reply', '')}".strip())
    if trip.get("state") == ARRIVED:
        seconds = max(0.0, (_number(trip.get("arrived_at")) or sent_at) - sent_at)
        details["seconds"] = round(seconds, 1)
        verdicts = trip.get("verdicts")
        results = verdict_summary(verdicts if isinstance(verdicts, dict) else {})
        details["results"] = results
        shown: Any = (", ".join(f"{k}={v}" for k, v in sorted(results.items()))
                      or phrase("health.part.round_trip.no_verdicts"))
        failed = sorted(k.upper() for k, v in results.items() if v in ("fail", "softfail", "permerror"))
        if failed:
            return make("round_trip", to, WARNING, "health.msg.round_trip.verdict_failed", details,
                        seconds=round(seconds), shown=shown, failed=phrases(failed, join="health.part.and"))
        return make("round_trip", to, OK, "health.msg.round_trip.ok", details, clock=_clock(sent_at), via=via,
                    seconds=round(seconds), shown=shown)
    reply = str(trip.get("reply") or "")
    if now < expires_at:
        return make("round_trip", to, WARNING, "health.msg.round_trip.pending", details, clock=_clock(sent_at),
                    via=via, reply=reply or phrase("health.part.round_trip.accepted"), until=_clock(expires_at))
    return make("round_trip", to, PROBLEM, "health.msg.round_trip.late", details, clock=_clock(sent_at), via=via,
                reply=reply or phrase("health.part.round_trip.no_reply"), until=_clock(expires_at), to=to)


def latest_finding(paths: Paths, now: Optional[float] = None) -> Optional[Finding]:
    """The finding of the newest round trip, if there was one."""
    remembered = trips(paths)
    return check_round_trip(remembered[0] if remembered else None, time.time() if now is None else now)
