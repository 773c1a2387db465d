"""Is MailPlus an open relay? (issue 15 check 5) Postfix's relay rules, as the root task recorded them, in plain words.

The root task (relay/relayfacts.py) records `postconf -x` for the parameters that decide who
may relay, per smtpd service with master.cf's overrides. `check_open_relay` is pure: mail
to other domains must be refused (reject_unauth_destination or defer_unauth_destination),
with exceptions only for trusted networks and logged-in users, and the trusted networks
(mynetworks) must be loopback or private LAN ranges.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Any, Dict, List, Optional, Tuple

from smartpop.health.findings import OK, PROBLEM, WARNING, Finding, worst
from smartpop.paths import Paths

log = logging.getLogger(__name__)

CHECK = "open_relay"
FILE = "postconf.json"
_GUARDS = ("reject_unauth_destination", "defer_unauth_destination")
# An unconditional reject (a submission port's "permit_sasl_authenticated, reject") closes the relay too.
_CLOSERS = (*_GUARDS, "reject", "defer")
# Before the guard these only let through trusted networks, logged-in users, local
# destinations, or reject: they cannot open the relay to strangers.
_SAFE_PERMITS = ("permit_mynetworks", "permit_sasl_authenticated", "permit_auth_destination",
                 "permit_tls_clientcerts")
_OPEN_PERMITS = ("permit", "permit_tls_all_clientcerts", "permit_mx_backup")
_SPLIT = re.compile(r"[\s,]+")
# What a LAN may be: loopback, RFC 1918, link-local, IPv6 unique-local (and IPv4-mapped loopback).
# Explicit, not ipaddress's is_private, which also counts documentation and other reserved ranges.
_LAN = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                          "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
                                          "::ffff:127.0.0.0/104")]


def facts_file(paths: Paths) -> Any:
    """Where the root task leaves the recorded postconf values."""
    return paths.relay_dir / "state" / FILE


def load_facts(paths: Paths) -> Optional[Dict[str, Any]]:
    """The recorded facts, or None when the root task has not recorded any (or they are unreadable)."""
    try:
        data = json.loads(facts_file(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _words(value: str) -> List[str]:
    return [w for w in _SPLIT.split(value.strip()) if w]


def judge_restrictions(relay: str, recipient: str) -> Tuple[str, str]:
    """(status, plain words) for smtpd_relay_restrictions and smtpd_recipient_restrictions."""
    for name, value in (("smtpd_relay_restrictions", relay), ("smtpd_recipient_restrictions", recipient)):
        words = _words(value)
        guard = next((i for i, w in enumerate(words) if w in _CLOSERS), None)
        if guard is None:
            continue
        before = words[:guard]
        opened = [w for w in before if w in _OPEN_PERMITS]
        if opened:
            return PROBLEM, (f"{name} lets anyone through with {opened[0]} before {words[guard]}, so strangers can "
                             "send through your server")
        unclear = [w for w in before if w.startswith("check_")]
        allowed = [w for w in before if w in _SAFE_PERMITS]
        who = " and ".join({"permit_mynetworks": "trusted networks", "permit_sasl_authenticated": "logged-in users",
                            "permit_auth_destination": "mail to your own domains",
                            "permit_tls_clientcerts": "known client certificates"}[w] for w in allowed)
        text = (f"{name} relays only for {who or 'nobody'} and refuses other destinations ({words[guard]})")
        if unclear:
            return WARNING, text + f", but {unclear[0]} comes first and may allow more (a table SmartPop cannot see)"
        return OK, text
    return PROBLEM, ("neither smtpd_relay_restrictions nor smtpd_recipient_restrictions contains "
                     "reject_unauth_destination, so Postfix may relay mail for anyone")


def _inside(network: Any, lan: Any) -> bool:
    return bool(network.version == lan.version and network.subnet_of(lan))


def judge_mynetworks(value: str) -> Tuple[str, str, List[str]]:
    """(status, plain words, the ranges that are not loopback/private) for mynetworks."""
    public: List[str] = []
    tables: List[str] = []
    for word in _words(value):
        if word.startswith("/") or re.match(r"^[a-z_]+:", word):
            tables.append(word)
            continue
        text = word.replace("[", "").replace("]", "")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            tables.append(word)
            continue
        if not any(_inside(network, lan) for lan in _LAN):
            public.append(word)
    if public:
        return PROBLEM, (f"mynetworks trusts {', '.join(public)}, which is not your LAN: every computer there may "
                         "send mail through your server without a login"), public
    if tables:
        return WARNING, (f"mynetworks names {', '.join(tables)}, which SmartPop cannot look into; make sure it "
                         "lists only your LAN"), public
    return OK, f"mynetworks trusts only loopback and LAN ranges ({value.strip() or 'none'})", public


def check_open_relay(facts: Optional[Dict[str, Any]], relay_enabled: bool) -> Optional[Finding]:
    """The open-relay finding from the recorded postconf facts (None when there is nothing to say)."""
    if facts is None:
        if not relay_enabled:
            return None
        return Finding(CHECK, "MailPlus", WARNING, "The root task has not recorded MailPlus's relay rules yet; it "
                       "does on its next run (set it up with the command on the Relay page).", {})
    if facts.get("error"):
        return Finding(CHECK, "MailPlus", WARNING, f"The root task could not read MailPlus's relay rules "
                       f"({facts['error']}); it tries again on its next run.", {"time": facts.get("time")})
    raw = facts.get("params")
    main = {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    recorded = facts.get("overrides")
    overrides: Dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    services = [str(s) for s in facts.get("services") or [] if isinstance(s, str)] or ["smtp/inet"]
    statuses: List[str] = []
    sentences: List[str] = []
    per_service: Dict[str, Any] = {}
    for service in services:
        own = overrides.get(service)
        params = {**main, **({k: str(v) for k, v in own.items()} if isinstance(own, dict) else {})}
        relay_status, relay_text = judge_restrictions(params.get("smtpd_relay_restrictions", ""),
                                                      params.get("smtpd_recipient_restrictions", ""))
        nets_status, nets_text, public = judge_mynetworks(params.get("mynetworks", ""))
        status = worst([relay_status, nets_status])
        per_service[service] = {"status": status, "params": params, "public_ranges": public}
        statuses.append(status)
        label = "" if service == "smtp/inet" else f"{service.split('/')[0]} (master.cf): "
        if status != OK or not sentences:
            sentences.append(f"{label}{relay_text}; {nets_text}")
    overall_status = worst(statuses)
    details = {"time": facts.get("time"), "services": per_service}
    text = ". ".join(sentences[:3])
    if overall_status == OK:
        return Finding(CHECK, "MailPlus", OK, f"MailPlus is not an open relay: {text}.", details)
    fix = ("remove the wide ranges from MailPlus Server > Security > Trusted networks (mynetworks) and keep "
           "reject_unauth_destination in the relay rules")
    return Finding(CHECK, "MailPlus", overall_status, f"{text}; {fix}.", details)
