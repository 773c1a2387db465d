"""MailPlus's Postfix settings as the doctor reads them: pure functions over postconf values and master.cf rows.

No I/O here: probes.py runs postconf and reads master.cf; facts.py turns these readings into facts.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, Mapping, Optional, Tuple

# Restriction lists in which `permit_mynetworks` lets mail from a trusted client skip the rest.
RESTRICTION_LISTS = ("smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
                     "smtpd_recipient_restrictions", "smtpd_relay_restrictions", "smtpd_data_restrictions",
                     "smtpd_end_of_data_restrictions")
FILTER_PARAMS = ("content_filter", "smtpd_milters")
# Parameters the doctor asks postconf for (effective values, defaults included).
POSTCONF_PARAMS = ("mail_version", "config_directory", "mynetworks", "mynetworks_style",
                   "non_smtpd_milters", "milter_default_action", *FILTER_PARAMS, *RESTRICTION_LISTS)
# Skipping these for 127.0.0.1 costs nothing: SmartPop's recipients are local mailboxes.
_HARMLESS = re.compile(r"^(permit\w*|reject_unauth_destination|defer_unauth_destination|reject_unauth_pipelining"
                       r"|reject_non_fqdn_recipient|reject_unknown_recipient_domain|reject_unlisted_recipient)$")
_TABLE = re.compile(r"^[a-z0-9_]+:")
_RESTRICTION = re.compile(r"^(permit|reject|defer|check|warn_if_reject|sleep)\w*$")


def restriction_items(value: str) -> List[str]:
    """A restriction list as items, each with its arguments ('reject_rbl_client zen.spamhaus.org')."""
    items: List[str] = []
    for token in re.split(r"[\s,]+", value.strip()):
        if not token:
            continue
        if _RESTRICTION.match(token) or not items:
            items.append(token)
        else:
            items[-1] += " " + token
    return items


def skipped_for_mynetworks(value: str) -> List[str]:
    """The checks in a restriction list that a client in mynetworks never meets (after permit_mynetworks)."""
    items = restriction_items(value)
    names = [item.split()[0] for item in items]
    if "permit_mynetworks" not in names:
        return []
    rest = items[names.index("permit_mynetworks") + 1:]
    return [item for item in rest if not _HARMLESS.match(item.split()[0])]


def network_covers(value: str, address: str) -> Optional[bool]:
    """Whether mynetworks lists `address`: True, False, or None when it also names tables we cannot read."""
    client = ipaddress.ip_address(address)
    opaque = False
    for token in re.split(r"[\s,]+", value.strip()):
        if not token:
            continue
        text = token.replace("[", "").replace("]", "")
        try:
            if client in ipaddress.ip_network(text, strict=False):
                return True
        except ValueError:
            # "hash:/etc/postfix/network_table" or "/etc/postfix/networks": a table we cannot judge.
            opaque = opaque or token.startswith("/") or bool(_TABLE.match(token))
    return None if opaque else False


def effective_filters(params: Mapping[str, str], services: Mapping[str, Mapping[str, str]],
                      listener: str) -> Dict[str, str]:
    """content_filter and smtpd_milters as the listener of SmartPop's delivery port applies them."""
    overrides = services.get(listener, {})
    return {name: overrides.get(name, params.get(name, "")) for name in FILTER_PARAMS}


def listener_for_port(master: List[List[str]], port: int) -> Tuple[str, str]:
    """(service key as in `postconf -P`, e.g. 'smtp/inet', 'smtpd/pass') that serves `port` over SMTP."""
    names = {str(port)} | ({"smtp"} if port == 25 else set())
    for fields in master:
        if len(fields) < 8 or fields[1] != "inet":
            continue
        service = fields[0]
        if service in names or service.rsplit(":", 1)[-1] in names:
            command = fields[7].split()[0]
            if command == "postscreen":
                # postscreen hands the connection to the `smtpd pass` service, whose -o apply.
                return "smtpd/pass", f"{service}/inet (postscreen, then smtpd/pass)"
            return f"{service}/inet", f"{service}/inet ({command})"
    return "", ""
