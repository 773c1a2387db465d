"""Where the copies of one routed message go: the placement rules, without a store or a socket.

The placer (collector/placer.py) asks the store and MailPlus; these functions decide from
their answers, in this order:
1. `plan`: who still needs a copy (what an earlier run placed is not sent again), after
   which the multidrop ledger drops who has the message already from another copy;
2. `split_doubt`: copies whose earlier hand-over ended in doubt go in their own, marked
   transaction; `sent` says which copies one transaction placed, left in doubt or failed;
3. `Placement`: MailPlus's replies for the recipients, then what became of the refused
   copies at the fallback, then the verdict: placed, or kept on the server (retried next run
   when the failure was temporary, after UNPLACEABLE_RETRY when nobody would take it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Container, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from smartpop.collector.recipients import RoutingDecision, RoutingPolicy

# A message nobody could take (even the fallback refused it) is retried at most this often.
UNPLACEABLE_RETRY = 3600.0
NOBODY = "no recipient and no fallback_recipient configured"


class Outcome(Protocol):
    """What one SMTP transaction answered per recipient (delivery.DeliveryResult)."""

    accepted: List[str]
    deferred: Dict[str, str]
    rejected: Dict[str, str]
    doubt: bool
    reply: str


@dataclass
class Plan:
    """Who of a routed message's recipients still needs a copy.

    `to_fallback` is the mailbox that stands in for refused or unknown recipients (its copy
    is the fallback's in the trail, not a user's); `earlier` lists the recipients an earlier
    run placed, each with its trail kind.
    """

    to_fallback: Optional[str]
    todo: List[str]
    earlier: List[Tuple[str, str]]
    stands_in: bool


def plan(decision: RoutingDecision, policy: RoutingPolicy, placed: Container[str]) -> Plan:
    """The copies still to send for `decision`, given the recipients its journal says are `placed`."""
    stands_in = decision.rule in ("fallback", "loop") or bool(decision.refused)
    to_fallback = (policy.fallback or policy.deliver_to) if stands_in else None
    todo = [r for r in decision.recipients if r not in placed]
    earlier = [(r, "fallback" if r == to_fallback else "user") for r in decision.recipients if r in placed]
    return Plan(to_fallback, todo, earlier, stands_in)


def without(rcpts: Sequence[str], served: Container[str]) -> List[str]:
    """`rcpts` less those `served` (the ledger's answer), in order."""
    return [r for r in rcpts if r not in served]


def split_doubt(rcpts: Sequence[str], doubtful: Container[str]) -> Tuple[List[str], List[str]]:
    """Fresh copies, and copies in doubt (sent again, marked, in their own transaction)."""
    return [r for r in rcpts if r not in doubtful], [r for r in rcpts if r in doubtful]


@dataclass
class Sent:
    """What one transaction leaves to record: copies in doubt, ledger entries, copies that failed."""

    doubt: List[str]
    ledger: List[str]
    failed: List[str]


def sent(rcpts: Sequence[str], noted: Sequence[str], outcome: Outcome, via: str) -> Sent:
    """Sort one transaction's copies after its reply (`noted`: the copies durably noted as 'sending').

    A noted copy whose reply never came is in doubt, never taken for delivered. The ledger
    names the recipients that have the message now; a fallback copy counts for the fallback only.
    """
    taken: Set[str] = set(outcome.accepted)  # a set: lists may hold thousands of recipients
    doubt = [r for r in noted if r not in taken] if outcome.doubt else []
    ledger = outcome.accepted if via == "route" else [rcpts[0]] if outcome.accepted else []
    in_doubt = set(doubt)
    failed = [r for r in rcpts if r not in taken and r not in in_doubt]
    return Sent(doubt, ledger, failed)


@dataclass
class Kept:
    """Why a message stays on the server, and when it is tried again (0: next run)."""

    error: str
    retry: float
    refused: bool  # somebody refused it for good (not only a temporary failure)


@dataclass
class Placement:
    """The copies of one message that are deferred or refused, and whether the fallback took one."""

    used_fallback: bool
    deferred: Dict[str, str] = field(default_factory=dict)
    unplaced: Dict[str, str] = field(default_factory=dict)

    def routed(self, outcome: Outcome) -> None:
        """MailPlus's replies for the routed recipients: 4xx wait for the next run, 5xx go to the fallback."""
        self.deferred.update(outcome.deferred)
        self.unplaced.update(outcome.rejected)

    def needs_fallback(self, fallback: Optional[str]) -> bool:
        """True when refused copies are left and a fallback recipient could take them."""
        return bool(self.unplaced) and bool(fallback)

    def fallback_has_it(self) -> List[str]:
        """The fallback has this message already: the refused copies count as placed (returned, to record)."""
        refused = sorted(self.unplaced)
        self.unplaced = {}
        return refused

    def fallback_sent(self, outcome: Outcome) -> List[str]:
        """The fallback's reply to the refused copies; the ones it placed (to record as duplicates) are returned."""
        if outcome.accepted:
            self.used_fallback = True
            return self.fallback_has_it()
        if outcome.deferred:
            self.deferred.update({r: outcome.reply for r in self.unplaced})
            self.unplaced = {}
        return []

    def verdict(self) -> Optional[Kept]:
        """None when every copy is placed, else why the message stays on the server."""
        if not (self.deferred or self.unplaced):
            return None
        error = "; ".join(f"{r}: {why}" for r, why in {**self.deferred, **self.unplaced}.items())[:500]
        retry = UNPLACEABLE_RETRY if self.unplaced and not self.deferred else 0.0
        return Kept(error, retry, refused=bool(self.unplaced))
