"""Issue 11.2 / 12: mail from outside never leaves the NAS again, and never reaches another user.

The real collector runs against Dovecot (the provider) and a Postfix that relays outside mail
to a recording sink (support/outbound_postfix.py): once with the company domain in
mydestination, where Postfix turns "victim%evil.example@firma.de", "evil.example!victim@..."
and quoted local parts into "victim@evil.example" and relays them, and once with it as a
virtual domain. Hostile messages must all land in the fallback maildir (bodies byte-identical)
and the sink must receive nothing.
"""

from __future__ import annotations

import logging
import os
import smtplib
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from smartpop.collector import delivery, service
from support.collect import Env, body_of
from support.outbound_postfix import OutboundPostfix, Sink

pytestmark = pytest.mark.mailstack

DOMAIN = "firma.de"
ANNA, BEN, POSTMASTER = f"anna@{DOMAIN}", f"ben@{DOMAIN}", f"postmaster@{DOMAIN}"


@pytest.fixture(params=["mydestination", "virtual"])
def outbound(request: pytest.FixtureRequest, env: Env) -> Iterator[Tuple[OutboundPostfix, Sink]]:
    """A MailPlus stand-in for firma.de whose smart relay points at a recording sink."""
    sink = Sink().start()
    postfix = OutboundPostfix.start(request.param, DOMAIN, sink.port, [ANNA, BEN, POSTMASTER])
    try:
        yield postfix, sink
    finally:
        postfix.stop()
        sink.stop()


def _provider_top(env: Env, n: int) -> str:
    """What a provider prepends when it takes a message in and files it into the catch-all."""
    return (f"Return-Path: <attacker@evil.example>\nDelivered-To: {env.catchall}\n"
            f"Received: from mail.evil.example (mail.evil.example [192.0.2.66])\n\tby mx.provider.test (Postfix) "
            f"with ESMTPS id H{n}\n\tfor <{env.catchall}>; Sat, 28 Nov 2026 06:00:0{n % 10} +0000\n")


def _sender_part(n: int, to: str = "undisclosed-recipients:;", extra: str = "") -> str:
    return (f"{extra}From: Mallory <attacker@evil.example>\nTo: {to}\nSubject: hostile {n}\n"
            f"Message-ID: <hostile{n}@evil.example>\nDate: Sat, 28 Nov 2026 06:00:00 +0000\n\n"
            f"hostile body {n}\n.leading dot\nlast line\n")


def _messages(env: Env) -> Dict[str, Tuple[bytes, List[str]]]:
    """name -> (raw message, local mailboxes that must get it)."""
    top = _provider_top
    return {
        # The reproduction of the issue: the sender's own Delivered-To below the provider's.
        "deep percent hack": ((top(env, 1) + _sender_part(
            1, extra="Delivered-To: victim%evil.example@firma.de\nX-Original-To: evil.example!victim@firma.de\n"))
            .encode(), [POSTMASTER]),
        "bang path on top": (("Delivered-To: evil.example!victim@firma.de\n" + _sender_part(2)).encode(),
                             [POSTMASTER]),
        "percent hack in To": (_sender_part(3, to="Victim <victim%evil.example@firma.de>").encode(), [POSTMASTER]),
        "quoted local part": (('Delivered-To: "victim@evil.example"@firma.de\n' + _sender_part(4)).encode(),
                              [POSTMASTER]),
        "source route to a local user": (("X-Original-To: <@evil.example:anna@firma.de>\n" + _sender_part(5))
                                         .encode(), [POSTMASTER]),
        "source route outside": (("X-Original-To: <@firma.de:victim@evil.example>\n" + _sender_part(6)).encode(),
                                 [POSTMASTER]),
        "two at signs": (("Delivered-To: <victim@evil.example@firma.de>\n" + _sender_part(7)).encode(),
                         [POSTMASTER]),
        # Issue 12: the bare-address pattern kept only the ASCII tail, "ben@".
        "non-ASCII local part": (("Delivered-To: rüben@firma.de\n" + _sender_part(8)).encode("utf-8"),
                                 [POSTMASTER]),
        # A forged loop marker must not push a message into the fallback.
        "forged loop marker": (("X-SmartPop-Loop: firma.de\nDelivered-To: anna@firma.de\n" + _sender_part(9))
                               .encode(), [ANNA]),
        # A bounce address that Postfix would rewrite to the outside becomes the null sender.
        "percent hack in Return-Path": (("Return-Path: <victim%evil.example@firma.de>\nDelivered-To: anna@firma.de\n"
                                         + _sender_part(10)).encode(), [ANNA]),
        # Control: how a provider delivers a BCC copy to the catch-all still goes to the right user.
        "provider-shaped bcc": ((f"Return-Path: <friend@remote.example>\nX-Original-To: {BEN}\n"
                                 f"Delivered-To: {env.catchall}\n"
                                 f"Received: from mail.remote.example by mx.provider.test (Postfix) with ESMTPS id B1;"
                                 f" Sat, 28 Nov 2026 06:00:00 +0000\n"
                                 + _sender_part(11, to=ANNA, extra="Delivered-To: anna@firma.de\n")).encode(),
                                [BEN]),
    }


REASONS = ("percent hack", "bang path", "quoted local part", "source route", "'@' in the local part",
           "non-ASCII local part", "below the provider's first Received", "did not write")


def _assert_nothing_left_the_nas(env: Env, postfix: OutboundPostfix, sink: Sink,
                                 cases: Dict[str, Tuple[bytes, List[str]]], log_text: str) -> None:
    """The sink got nothing; each local mailbox holds exactly its messages, bodies byte-identical; the log says why."""
    postfix.drain()
    assert sink.received() == [], postfix.log()[-3000:]
    assert env.left_on_provider() == 0
    for user in (ANNA, BEN, POSTMASTER):
        got = sorted(body_of(m) for m in postfix.maildir(user))
        want = sorted(body_of(raw) for raw, users in cases.values() if user in users)
        assert got == want, f"{user}: {[g[:20] for g in got]}"
    # Nobody else got anything (e.g. "ben@" from "rüben@"), and the bounce address became <>.
    assert [m for m in postfix.maildir(ANNA) if b"Return-Path: <victim" in m] == []
    assert any(m.startswith(b"Return-Path: <>\n") and b"hostile body 10" in m for m in postfix.maildir(ANNA))
    for reason in REASONS:
        assert reason in log_text, reason


def test_hostile_recipients_never_reach_the_outside(env: Env, outbound: Tuple[OutboundPostfix, Sink],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    postfix, sink = outbound
    env.stack.add_users([(env.catchall, env.password)])
    cases = _messages(env)
    env.fill([raw for raw, _ in cases.values()])
    config = env.write_config(local_domains=[DOMAIN], fallback_recipient=POSTMASTER,
                              delivery={"host": "127.0.0.1", "port": postfix.smtp_port})
    with caplog.at_level(logging.INFO, logger="smartpop.collector"):
        summary = service.fetch_all(env.paths, config)
    assert summary.ok, summary.lines()
    _assert_nothing_left_the_nas(env, postfix, sink, cases, "\n".join(r.getMessage() for r in caplog.records))
    # The set-up can leak: the same Postfix does relay a rewritten (or outside) address to the sink.
    probe = "victim%evil.example@firma.de" if postfix.mode == "mydestination" else "probe@outside.example"
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as smtp:
        smtp.sendmail("probe@remote.example", [probe], b"Subject: probe\n\nprobe\n")
    postfix.drain()
    assert [m.rcpt_tos for m in sink.received()] == [[probe.replace("victim%evil.example@firma.de",
                                                                    "victim@evil.example")]]


def test_delivery_refuses_unsafe_rcpt_whatever_routing_said(outbound: Tuple[OutboundPostfix, Sink]) -> None:
    postfix, sink = outbound
    hostile = ["victim%evil.example@firma.de", "evil.example!victim@firma.de", '"victim@evil.example"@firma.de',
               "@firma.de:victim@evil.example", "victim@evil.example", "rüben@firma.de"]
    session = delivery.SmtpSession("127.0.0.1", postfix.smtp_port, timeout=30, domains=(DOMAIN,))
    try:
        raw = b"From: a@remote.example\nSubject: guard\nMessage-ID: <guard@remote.example>\n\nguarded body\n"
        result = session.deliver("victim%evil.example@firma.de", [*hostile, ANNA], lambda: [raw])
    finally:
        session.close()
    assert result.accepted == [ANNA]
    assert sorted(result.rejected) == sorted(hostile)
    assert all("not sent by SmartPop" in result.rejected[r] for r in hostile if r != "rüben@firma.de")
    # Issue 12 §3: this Postfix offers SMTPUTF8, so the exact address is asked (never "ben@"), and
    # MailPlus itself refuses it: no such mailbox here. The runner sends such a copy to the fallback.
    assert result.rejected["rüben@firma.de"].startswith("550 5.1.1 <rüben@firma.de>: Recipient address rejected")
    postfix.drain()
    assert sink.received() == []
    stored = postfix.maildir(ANNA)
    assert len(stored) == 1 and stored[0].startswith(b"Return-Path: <>\n") and body_of(stored[0]) == body_of(raw)


def test_a_collected_message_that_comes_back_is_stopped_by_its_marker(env: Env) -> None:
    """The v2 marker survives a real round trip: MailPlus delivers it, a user forwards it back to the catch-all."""
    env.users("anna")
    anna = env.addr("anna")
    original = (f"Return-Path: <s@remote.test>\nDelivered-To: {anna}\nFrom: s@remote.test\nTo: {anna}\n"
                "Subject: round trip\nMessage-ID: <round.trip@remote.test>\n\nround trip body\n").encode()
    env.fill([original])
    config = env.write_config()
    assert service.fetch_all(env.paths, config).ok
    delivered = env.local("anna")
    assert len(delivered) == 1 and b"X-SmartPop-Loop: v2 " in delivered[0]
    # As a forward keeps the headers: the stored copy, with Postfix's Received on top, goes back.
    env.fill([delivered[0]])
    second = service.fetch_all(env.paths, config)
    assert second.ok and second.results["sammel"].fallback == 1
    assert len(env.local("anna")) == 1
    assert [body_of(m) for m in env.local("postmaster")] == [body_of(original)]
    # The routing tester agrees when it is given the installation's key, and only then.
    from smartpop.collector import loopkey  # here: the other tests also run against code without it

    assert service.explain_routing(config, config.accounts[0], delivered[0],
                                   loop_key=loopkey.load_or_create(env.paths)).loop
    assert not service.explain_routing(config, config.accounts[0], delivered[0]).loop


def test_a_fresh_build_refuses_every_hostile_sequence(built_spk: Path, env: Env, tmp_path: Path) -> None:
    """The same messages through the CLI of the unpacked .spk, into Postfix with the domain in mydestination."""
    target = tmp_path / "target"
    target.mkdir()
    # Unpacked the way the README's "Try it locally" does, as DSM does on install.
    subprocess.run(f"tar -xOf {built_spk} package.tgz | tar -xzf - -C {target}", shell=True, check=True)
    sink = Sink().start()
    postfix = OutboundPostfix.start("mydestination", DOMAIN, sink.port, [ANNA, BEN, POSTMASTER])
    try:
        env.stack.add_users([(env.catchall, env.password)])
        cases = _messages(env)
        env.fill([raw for raw, _ in cases.values()])
        env.write_config(local_domains=[DOMAIN], fallback_recipient=POSTMASTER,
                         delivery={"host": "127.0.0.1", "port": postfix.smtp_port})
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}  # not the source tree
        proc = subprocess.run([str(target / "bin/smartpop"), "--data", str(env.data), "fetch"], capture_output=True,
                              text=True, env=run_env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        log_text = (env.data / "smartpop.log").read_text(errors="replace")
        _assert_nothing_left_the_nas(env, postfix, sink, cases, log_text)
    finally:
        postfix.stop()
        sink.stop()
