"""The placement rules: where one routed message's copies go, from the store's and MailPlus's answers (no servers)."""

from __future__ import annotations

from smartpop.collector import headers, placement
from smartpop.collector.delivery import DeliveryResult
from smartpop.collector.recipients import RoutingDecision, RoutingPolicy, decide

FALLBACK = "postmaster@firma.de"
POLICY = RoutingPolicy(mode="multidrop", local_domains=("firma.de",), fallback=FALLBACK,
                       own_addresses=("sammel@firma.de",), loop_key=b"k" * 32)
ANNA, BEN = "anna@firma.de", "ben@firma.de"


def routed(*rcpts: str) -> RoutingDecision:
    return RoutingDecision(list(rcpts), "Delivered-To", "test")


def test_all_delivered() -> None:
    plan = placement.plan(routed(ANNA, BEN), POLICY, {})
    assert plan.todo == [ANNA, BEN] and plan.earlier == [] and plan.to_fallback is None and not plan.stands_in
    state = placement.Placement(used_fallback=plan.stands_in)
    state.routed(DeliveryResult(accepted=[ANNA, BEN], reply="250 ok"))
    assert not state.needs_fallback(FALLBACK)
    assert state.verdict() is None and not state.used_fallback


def test_what_an_earlier_run_placed_is_not_sent_again() -> None:
    plan = placement.plan(routed(ANNA, BEN), POLICY, {ANNA: "250 ok"})
    assert plan.todo == [BEN] and plan.earlier == [(ANNA, "user")]


def test_some_refused_go_to_the_fallback() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(accepted=[ANNA], rejected={BEN: "550 5.1.1 no such user"}))
    assert state.needs_fallback(FALLBACK) and state.unplaced == {BEN: "550 5.1.1 no such user"}
    assert state.fallback_sent(DeliveryResult(accepted=[FALLBACK], reply="250 ok")) == [BEN]
    assert state.used_fallback and state.unplaced == {} and state.verdict() is None


def test_refused_everywhere_waits_long_and_says_so() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(rejected={BEN: "550 no such user"}))
    assert state.fallback_sent(DeliveryResult(rejected={FALLBACK: "550 full"}, reply="550 full")) == []
    kept = state.verdict()
    assert kept == placement.Kept(f"{BEN}: 550 no such user", placement.UNPLACEABLE_RETRY, refused=True)
    assert not state.used_fallback


def test_refused_without_a_fallback_stays_on_the_server() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(rejected={BEN: "550 no such user"}))
    assert not state.needs_fallback(None) and not state.needs_fallback("")
    kept = state.verdict()
    assert kept is not None and kept.refused and kept.retry == placement.UNPLACEABLE_RETRY


def test_fallback_deferring_keeps_the_message_for_the_next_run() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(rejected={BEN: "550 no such user"}))
    assert state.fallback_sent(DeliveryResult(deferred={FALLBACK: "451 later"}, reply="451 later")) == []
    assert state.verdict() == placement.Kept(f"{BEN}: 451 later", 0.0, refused=False)


def test_fallback_already_has_it() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(accepted=[ANNA], rejected={BEN: "550 no such user", "c@firma.de": "550 gone"}))
    assert state.fallback_has_it() == [BEN, "c@firma.de"]  # recorded as duplicates, sorted
    # Nothing was sent to the fallback this time: the copy counts as placed, not as a fallback delivery.
    assert state.verdict() is None and not state.used_fallback


def test_already_delivered_from_another_copy() -> None:
    plan = placement.plan(routed(ANNA, BEN, "c@firma.de"), POLICY, {})
    assert placement.without(plan.todo, {BEN}) == [ANNA, "c@firma.de"]
    assert placement.without(plan.todo, set()) == plan.todo


def test_in_doubt_recipients_go_in_their_own_transaction() -> None:
    fresh, again = placement.split_doubt([ANNA, BEN, "c@firma.de"], {BEN})
    assert fresh == [ANNA, "c@firma.de"] and again == [BEN]
    # The connection died after the dot: a noted copy without a 250 is in doubt, never delivered.
    lost = DeliveryResult(accepted=[ANNA], deferred={BEN: "lost"}, doubt=True, reply="lost")
    assert placement.sent([ANNA, BEN], [ANNA, BEN], lost, "route") == placement.Sent([BEN], [ANNA], [])
    # Without doubt a copy that got no 250 failed; one never noted (refused at RCPT) too.
    refused = DeliveryResult(accepted=[ANNA], rejected={BEN: "550 no"}, reply="250 ok")
    assert placement.sent([ANNA, BEN], [ANNA], refused, "route") == placement.Sent([], [ANNA], [BEN])
    # A fallback copy counts for the fallback in the ledger.
    taken = DeliveryResult(accepted=[FALLBACK], reply="250 ok")
    assert placement.sent([FALLBACK], [FALLBACK], taken, "fallback").ledger == [FALLBACK]
    assert placement.sent([FALLBACK], [], DeliveryResult(rejected={FALLBACK: "550"}), "fallback").ledger == []


def test_not_a_plain_mailbox_goes_to_the_fallback() -> None:
    decision = decide(headers.parse_fields(b"Delivered-To: a%b@firma.de\n\n"), POLICY)
    assert decision.refused and decision.recipients == [FALLBACK]
    plan = placement.plan(decision, POLICY, {})
    assert plan.stands_in and plan.to_fallback == FALLBACK and plan.todo == [FALLBACK]
    assert placement.Placement(used_fallback=plan.stands_in).used_fallback
    # Placed by an earlier run, the copy is the fallback's in the trail.
    assert placement.plan(decision, POLICY, {FALLBACK: "250"}).earlier == [(FALLBACK, "fallback")]


def test_single_drop_fallback_is_the_mailbox_it_delivers_to() -> None:
    single = RoutingPolicy(mode="single", local_domains=(), deliver_to=ANNA)
    plan = placement.plan(RoutingDecision([ANNA], "fallback", "no rule"), single, {})
    assert plan.to_fallback == ANNA and plan.stands_in


def test_temporary_failure_defers() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(accepted=[ANNA], deferred={BEN: "451 4.3.0 try later"}))
    assert not state.needs_fallback(FALLBACK)
    assert state.verdict() == placement.Kept(f"{BEN}: 451 4.3.0 try later", 0.0, refused=False)


def test_deferred_and_refused_wait_for_the_next_run_and_say_both() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(deferred={ANNA: "451 later"}, rejected={BEN: "550 no"}))
    kept = state.verdict()
    assert kept == placement.Kept(f"{ANNA}: 451 later; {BEN}: 550 no", 0.0, refused=True)


def test_a_long_error_is_cut() -> None:
    state = placement.Placement(used_fallback=False)
    state.routed(DeliveryResult(deferred={f"u{n}@firma.de": "451 " + "x" * 100 for n in range(20)}))
    kept = state.verdict()
    assert kept is not None and len(kept.error) == 500
