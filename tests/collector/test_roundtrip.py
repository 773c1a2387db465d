"""The round trip end to end: out through the provider's submission server, into Dovecot's catch-all, back."""

from __future__ import annotations

import json
import os
import time

from smartpop.config.schema import parse_config
from smartpop.health import roundtrip
from support.collect import Env, message
from support.upstream_smtp import Received, Upstream

RELAY_USER = "relay@firma.test"
RELAY_PASSWORD = "pw-Roundtrip-Relay-61"


def _provider_delivers(env: Env) -> Upstream:
    """The provider's submission server: AUTH over STARTTLS, then delivery into the catch-all as a provider does it."""

    def deliver(record: Received) -> None:
        # What a provider adds on arrival: the envelope (Delivered-To), its verdicts, its Received line.
        trace = (f"Return-Path: <{record.mail_from}>\n"
                 f"Delivered-To: {record.rcpt_tos[0]}\n"
                 "Authentication-Results: mx.provider.test; spf=pass smtp.mailfrom=firma.test; "
                 "dkim=pass header.d=firma.test; dmarc=pass header.from=firma.test\n"
                 "Received-SPF: pass (mx.provider.test: domain of firma.test designates 127.0.0.1 as permitted)\n"
                 f"Received: from nas (localhost [127.0.0.1]) by smtp.provider.test with ESMTPSA ({record.tls_version})"
                 f" for <{record.rcpt_tos[0]}>; Sat, 28 Nov 2026 06:00:00 +0000\n").encode()
        env.fill([trace + record.data.replace(b"\r\n", b"\n")])

    return Upstream(env.stack.certs, "starttls", {RELAY_USER: RELAY_PASSWORD}, on_message=deliver).start()


def test_round_trip_comes_back_and_is_consumed(env: Env) -> None:
    """Sent with the relay login, fetched back by `smartpop fetch`: ok with the time; nobody gets it; provider empty.

    A second message that copies the pending trip's header (but not its Message-ID) is an
    attacker's try: it is delivered as usual, and the trip is still consumed by the real one.
    """
    env.users("anna")
    upstream = _provider_delivers(env)
    try:
        doc = {"relay": {"enabled": True, "host": "localhost", "port": upstream.port, "security": "starttls",
                         "username": RELAY_USER, "password": RELAY_PASSWORD}}
        env.write_config(**doc)
        config = parse_config(json.loads(env.paths.config.read_text()))
        trip = roundtrip.start(env.paths, config, ca_file=env.stack.ca_file)
    finally:
        upstream.stop()
    assert trip["state"] == "pending" and trip["reply"].startswith("250"), trip
    sent = upstream.messages[0]
    assert sent.user == RELAY_USER and sent.tls_version and sent.mail_from == RELAY_USER
    assert sent.rcpt_tos == [env.catchall]
    assert f"X-SmartPop-Roundtrip: {trip['token']}".encode() in sent.data
    assert f"<roundtrip.{trip['token']}@firma.test>".encode() in sent.data
    forged = message(1, env.addr("anna"), extra=f"X-SmartPop-Roundtrip: {trip['token']}\n",
                     msgid=f"<forged.{os.urandom(4).hex()}@remote.test>")
    env.fill([forged])
    assert env.left_on_provider() == 2

    result = env.run_cli("fetch")
    assert result.returncode == 0, result.stderr

    stored = roundtrip.trips(env.paths)[0]
    assert stored["state"] == "arrived" and stored["account"] == "sammel"
    finding = roundtrip.check_round_trip(stored, time.time())
    assert finding is not None and finding.status == "ok", finding
    assert "came back after" in finding.summary and "spf=pass" in finding.summary and "dmarc=pass" in finding.summary
    assert 0 <= finding.details["seconds"] < 300
    assert env.left_on_provider() == 0
    anna = env.local("anna")
    assert len(anna) == 1 and b"forged." in anna[0]  # the attacker's copy was routed as usual
    assert env.local(env.fallback) == [] and env.stack.maildir(env.catchall) == []
    assert RELAY_PASSWORD not in (env.paths.data / "health-state.json").read_text()
