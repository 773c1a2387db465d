"""The routing facts of the configuration: each account's RoutingPolicy and the domains SmartPop delivers to."""

from __future__ import annotations

from typing import Tuple

from smartpop.collector import recipients
from smartpop.config.schema import Account, Config


def policy_for(config: Config, account: Account, loop_key: bytes = b"") -> recipients.RoutingPolicy:
    """The routing facts of `account` under `config` (`loop_key`: loopkey.load_or_create)."""
    user = account.username.lower()
    # The catch-all's own address never names a real recipient. A login without a domain
    # (some providers use "m0123456" or "sammel") is taken as local part in each local domain.
    own = (user,) if "@" in user else tuple(f"{user}@{domain}" for domain in config.local_domains)
    return recipients.RoutingPolicy(
        mode=account.mode, local_domains=tuple(config.local_domains), aliases=dict(config.aliases),
        fallback=config.fallback_recipient, deliver_to=account.deliver_to, own_addresses=own,
        loop_key=loop_key)


def delivery_domains(config: Config) -> Tuple[str, ...]:
    """The domains SmartPop may hand mail to: local_domains, plus the deliver_to of single-drop accounts.

    A single-drop account's deliver_to is the admin's own statement of a local mailbox (it
    is allowed without local_domains); nothing a message says can add a domain here.
    """
    domains = [d.lower() for d in config.local_domains]
    for account in config.accounts:
        if account.mode == "single" and account.deliver_to:
            domains.append(account.deliver_to.rpartition("@")[2].lower())
    return tuple(sorted(set(domains)))
