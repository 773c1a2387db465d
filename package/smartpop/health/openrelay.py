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

from smartpop.health.findings import OK, PROBLEM, WARNING, Finding, make, phrase, phrases, worst
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
# The permits before the guard, in plain words (catalog phrases).
_WHO = {"permit_mynetworks": "health.part.who.mynetworks", "permit_sasl_authenticated": "health.part.who.sasl",
        "permit_auth_destination": "health.part.who.own_domains", "permit_tls_clientcerts": "health.part.who.certs"}
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


def judge_restrictions(relay: str, recipient: str) -> Tuple[str, Dict[str, Any]]:
    """(status, plain words as a catalog phrase) for smtpd_relay_restrictions and smtpd_recipient_restrictions."""
    for name, value in (("smtpd_relay_restrictions", relay), ("smtpd_recipient_restrictions", recipient)):
        words = _words(value)
        guard = next((i for i, w in enumerate(words) if w in _CLOSERS), None)
        if guard is None:
            continue
        before = words[:guard]
        opened = [w for w in before if w in _OPEN_PERMITS]
        if opened:
            return PROBLEM, phrase("health.part.relay.open", name=name, permit=opened[0], guard=words[guard])
        unclear = [w for w in before if w.startswith("check_")]
        allowed = [w for w in before if w in _SAFE_PERMITS]
        who = (phrases([phrase(_WHO[w]) for w in allowed], join="health.part.and") if allowed
               else phrase("health.part.who.nobody"))
        if unclear:
            return WARNING, phrase("health.part.relay.unclear", name=name, who=who, guard=words[guard],
                                   table=unclear[0])
        return OK, phrase("health.part.relay.ok", name=name, who=who, guard=words[guard])
    return PROBLEM, phrase("health.part.relay.none")


def _inside(network: Any, lan: Any) -> bool:
    return bool(network.version == lan.version and network.subnet_of(lan))


def judge_mynetworks(value: str) -> Tuple[str, Dict[str, Any], List[str]]:
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
        return PROBLEM, phrase("health.part.nets.public", ranges=", ".join(public)), public
    if tables:
        return WARNING, phrase("health.part.nets.tables", tables=", ".join(tables)), public
    return OK, phrase("health.part.nets.ok", value=value.strip() or phrase("health.part.none")), public


def check_open_relay(facts: Optional[Dict[str, Any]], relay_enabled: bool) -> Optional[Finding]:
    """The open-relay finding from the recorded postconf facts (None when there is nothing to say)."""
    if facts is None:
        if not relay_enabled:
            return None
        return make(CHECK, "MailPlus", WARNING, "health.msg.open_relay.not_recorded")
    if facts.get("error"):
        return make(CHECK, "MailPlus", WARNING, "health.msg.open_relay.error", {"time": facts.get("time")},
                    error=str(facts["error"]))
    raw = facts.get("params")
    main = {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    recorded = facts.get("overrides")
    overrides: Dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    services = [str(s) for s in facts.get("services") or [] if isinstance(s, str)] or ["smtp/inet"]
    statuses: List[str] = []
    sentences: List[Dict[str, Any]] = []
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
        if status != OK or not sentences:
            sentence = phrase("health.part.relay.sentence", relay=relay_text, nets=nets_text)
            if service != "smtp/inet":
                sentence = phrase("health.part.relay.service", service=service.split("/")[0], text=sentence)
            sentences.append(sentence)
    overall_status = worst(statuses)
    details = {"time": facts.get("time"), "services": per_service}
    key = "health.msg.open_relay.ok" if overall_status == OK else "health.msg.open_relay.bad"
    return make(CHECK, "MailPlus", overall_status, key, details, text=phrases(sentences[:3], sep=". "))
