"""The mail trail written by real runs (issue 16): the corpus, refusals and waits, and a crash.

The corpus tests (test_corpus.py, test_routing_safety.py) assert where each message goes; here
the trail must say the same: per message its routing rule and explanation, where each copy
went and the outcome, with every header-derived text on one line and bounded.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from smartpop.collector import headers, loopkey, recipients, service, trace
from smartpop.collector.policy import policy_for
from smartpop.trail import query, record
from support.collect import CORPUS_DOMAIN, Env, assert_census_after_doubt, child_env, message
from support.faultproxy import Rule, SmtpFaultProxy

pytestmark = pytest.mark.mailstack

CORPUS = Path(__file__).resolve().parents[1] / "data" / "messages"
USERS = ["anna", "ben", "postmaster"]


def _rows(env: Env) -> List[Dict[str, Any]]:
    return list(query.each(env.paths, query.Filters()))


def _users(row: Dict[str, Any]) -> Tuple[str, ...]:
    """The local parts whose mailbox got a copy (placed now or by an earlier run)."""
    return tuple(sorted(c["rcpt"].split("@")[0] for c in row["copies"] if c["placement"] in ("user", "fallback")))


def test_corpus_trail_matches_the_routing_decisions(env: Env) -> None:
    catchall = f"sammel@{CORPUS_DOMAIN}"
    env.stack.add_users([(catchall, "corpus-pw")] + [(f"{u}@{CORPUS_DOMAIN}", "x") for u in USERS])
    for user in USERS:  # shared with test_corpus.py
        shutil.rmtree(env.stack.local_maildir(f"{user}@{CORPUS_DOMAIN}"), ignore_errors=True)
    expected: Dict[str, List[str]] = json.loads((CORPUS / "expected.json").read_text())
    names = sorted(expected)
    env.stack.fill(catchall, [(CORPUS / n).read_bytes() for n in names])
    account = env.account(username=catchall, password="corpus-pw")
    config = env.write_config([account], local_domains=[CORPUS_DOMAIN],
                              aliases={f"info@{CORPUS_DOMAIN}": [f"anna@{CORPUS_DOMAIN}", f"ben@{CORPUS_DOMAIN}"]},
                              fallback_recipient=f"postmaster@{CORPUS_DOMAIN}", trail={"subjects": True})
    summary = service.fetch_all(env.paths, config)
    assert summary.ok, summary.lines()
    rows = _rows(env)
    assert len(rows) == len(names)  # one row per message, none for the quiet parts of the run
    policy = policy_for(config, config.accounts[0], loopkey.load_or_create(env.paths))

    want: Dict[str, Counter[Any]] = {}
    decisions: Dict[str, List[recipients.RoutingDecision]] = {}
    for name in names:
        fields = headers.parse_fields(headers.split_header((CORPUS / name).read_bytes())[0])
        message_id = (headers.first(fields, "message-id") or "").strip()[:500]
        users = tuple(sorted(expected[name]))
        outcome = "duplicate" if not users else "fallback" if "postmaster" in users else "delivered"
        want.setdefault(message_id, Counter())[(outcome, users, trace.return_path(fields))] += 1
        # MailPlus may offer SMTPUTF8, which the runner then asks for (a second decision).
        decisions.setdefault(message_id, []).extend(
            [recipients.decide(fields, policy), recipients.decide(fields, replace(policy, smtputf8=True))])
    got: Dict[str, Counter[Any]] = {}
    for row in rows:
        got.setdefault(row["message_id"], Counter())[(row["outcome"], _users(row), row["sender"])] += 1
        # The rule and its explanation are the routing decision's, as the log line gives them.
        assert any(row["rule"] == d.rule and row["detail"] == record.bounded(d.detail, record.DETAIL_MAX)
                   for d in decisions[row["message_id"]]), (row, decisions[row["message_id"]])
        refused = [c["rcpt"] for c in row["copies"] if c["placement"] == "refused"]
        if row["outcome"] == "fallback":
            assert refused or row["rule"] in ("fallback", "loop"), row
        assert not row["redelivered"]
        for value in (row["subject"] or "", row["sender"], row["from_addr"], row["detail"], row["message_id"]):
            assert value.isprintable()
        assert row["subject"] is None or len(row["subject"]) <= record.SUBJECT_MAX
        assert row["account"] == "sammel" and row["size"] > 0
    assert got == want
    # The hostile ones, by name: refused local parts are listed as refused, and the fallback has the copy.
    percent = next(r for r in rows if r["message_id"] == "<percent-hack@remote.example>")
    assert {(c["rcpt"], c["placement"]) for c in percent["copies"]} == {
        (f"victim%evil.example@{CORPUS_DOMAIN}", "refused"), (f"postmaster@{CORPUS_DOMAIN}", "fallback")}
    unknown = next(r for r in rows if r["message_id"] == "<unknown-user@remote.example>")
    by_rcpt = {c["rcpt"]: c for c in unknown["copies"]}
    assert by_rcpt[f"nobody@{CORPUS_DOMAIN}"]["placement"] == "refused"
    assert by_rcpt[f"nobody@{CORPUS_DOMAIN}"]["reply"].startswith("5")  # MailPlus's own refusal
    assert by_rcpt[f"postmaster@{CORPUS_DOMAIN}"]["reply"].startswith("250")
    copy = next(r for r in rows if r["outcome"] == "duplicate")
    assert [c["placement"] for c in copy["copies"]] == ["duplicate"]


def test_refused_and_waiting_messages_are_in_the_trail_with_the_replies(env: Env) -> None:
    env.users("anna")
    anna = env.addr("anna")
    env.fill([message(1, anna), message(2, anna), message(3, anna)])
    proxy = SmtpFaultProxy(env.stack.smtp_port, [
        Rule("RCPT", "550 5.1.1 mailbox unavailable", match=anna, sender="sender2@"),
        Rule("RCPT", "550 5.1.1 mailbox unavailable", match=env.fallback, sender="sender2@"),
        Rule("RCPT", "451 4.3.0 try again later", match=anna, sender="sender3@", times=2),
    ]).start()
    try:
        config = env.write_config(delivery={"host": "127.0.0.1", "port": proxy.port})
        assert not service.fetch_all(env.paths, config).ok
        rows = {r["sender"]: r for r in _rows(env)}
        assert rows["sender1@remote.test"]["outcome"] == "delivered"
        assert all(r["subject"] is None for r in rows.values())  # trail.subjects is off by default
        failed = rows["sender2@remote.test"]
        assert failed["outcome"] == "failed"
        assert [(c["rcpt"], c["placement"], c["reply"][:3]) for c in failed["copies"]] == [
            (anna, "refused", "550"), (env.fallback, "refused", "550")]
        waiting = rows["sender3@remote.test"]
        assert waiting["outcome"] == "waiting"
        assert [(c["rcpt"], c["placement"], c["reply"][:3]) for c in waiting["copies"]] == [(anna, "waiting", "451")]
        # The next run: the refused one waits for its hourly retry (no attempt, no row); the
        # temporary one is tried again (a row per attempt), the third time it is placed.
        service.fetch_all(env.paths, config)
        service.fetch_all(env.paths, config)
    finally:
        proxy.stop()
    history = [(r["sender"], r["outcome"]) for r in reversed(_rows(env))]
    assert Counter(history) == Counter({("sender1@remote.test", "delivered"): 1, ("sender2@remote.test", "failed"): 1,
                                        ("sender3@remote.test", "waiting"): 2,
                                        ("sender3@remote.test", "delivered"): 1})
    found, total = query.search(env.paths, query.Filters(outcome=("waiting", "failed")))
    assert total == 3 and {r["sender"] for r in found} == {"sender2@remote.test", "sender3@remote.test"}


def test_a_crash_between_hand_over_and_commit_leaves_no_delivered_row_without_its_record(env: Env) -> None:
    env.users("anna", "ben")
    anna, ben = env.addr("anna"), env.addr("ben")
    box = {"anna": [message(1, anna), message(3, anna)], "ben": [message(2, ben)]}
    env.fill([message(1, anna), message(2, ben), message(3, anna)])
    env.write_config()
    crashed = subprocess.run([sys.executable, "-m", "support.crashrun", "--data", str(env.data), "fetch"],
                             capture_output=True, text=True, timeout=300,
                             env=child_env({"SMARTPOP_CRASH_AT": "after_data", "SMARTPOP_CRASH_NTH": "2"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]

    def unrecorded() -> List[Any]:
        conn = sqlite3.connect(env.paths.state_db)
        try:
            return conn.execute(
                "SELECT t.uid, t.outcome FROM trail t WHERE t.outcome IN ('delivered', 'fallback', 'duplicate')"
                " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.account=t.account AND m.folder=t.folder"
                " AND m.uid=t.uid AND m.state='done')").fetchall()
        finally:
            conn.close()

    assert unrecorded() == []
    final = env.run_cli("fetch")
    assert final.returncode == 0, final.stderr[-3000:]
    extra = assert_census_after_doubt(env, box)
    assert unrecorded() == []
    placed = [r for r in _rows(env) if r["outcome"] == "delivered"]
    assert sorted(r["sender"] for r in placed) == ["sender1@remote.test", "sender2@remote.test", "sender3@remote.test"]
    # The copy in doubt was sent again, marked; its row says so.
    assert any(r["redelivered"] for r in placed) == (extra > 0)
