"""End to end against real Dovecot and Postfix: protocols, modes, delivery rules, state."""

from __future__ import annotations

import json

import pytest

from smartpop.collector import service
from smartpop.errors import AuthError, ConnectError
from support.collect import Env, body_of, message
from support.statestore import backdate_done

pytestmark = pytest.mark.mailstack

SECURITY = [("pop3", "ssl"), ("pop3", "starttls"), ("pop3", "none"),
            ("imap", "ssl"), ("imap", "starttls"), ("imap", "none")]


def _port(env: Env, protocol: str, security: str) -> int:
    s = env.stack
    if protocol == "pop3":
        return s.pop3s_port if security == "ssl" else s.pop3_port
    return s.imaps_port if security == "ssl" else s.imap_port


@pytest.mark.parametrize(("protocol", "security"), SECURITY)
def test_multidrop_every_protocol_and_security(env: Env, protocol: str, security: str) -> None:
    env.users("anna", "ben")
    originals = [message(1, env.addr("anna")), message(2, env.addr("ben")), message(3, env.addr("anna"))]
    env.fill(originals)
    config = env.write_config([env.account(protocol=protocol, security=security,
                                           port=_port(env, protocol, security),
                                           allow_insecure=security == "none")])
    summary = service.fetch_all(env.paths, config)
    assert summary.ok, summary.lines()
    anna, ben = env.local("anna"), env.local("ben")
    assert len(anna) == 2 and len(ben) == 1
    assert sorted(body_of(m) for m in anna + ben) == sorted(body_of(m) for m in originals)
    assert env.left_on_provider() == 0
    # The provider's Delivered-To is renamed; ours (Postfix's own) is the only one left.
    stored = ben[0].decode()
    assert f"X-Original-Delivered-To: {env.addr('ben')}" in stored
    assert stored.count("\nDelivered-To:") == 1
    assert "X-SmartPop-Loop: " in stored and "(SmartPop " in stored
    # Nothing new: a second pass collects nothing.
    again = service.fetch_all(env.paths, config)
    assert again.results["sammel"].collected == 0 and len(env.local("anna")) == 2


def test_every_routing_decision_is_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"), msgid="<logged.1@remote.test>")])
    with caplog.at_level("INFO", logger="smartpop.collector"):
        assert service.fetch_all(env.paths, env.write_config()).ok
    lines = [r.getMessage() for r in caplog.records if "<logged.1@remote.test>" in r.getMessage()]
    assert any(f"rule Delivered-To -> {env.addr('anna')}" in line for line in lines), lines


def test_single_mode_and_return_path(env: Env) -> None:
    env.users("anna", "ben")
    env.fill([message(1, env.addr("ben")), message(2, ""), message(3, env.addr("ben"), extra="")])
    config = env.write_config([env.account(mode="single", deliver_to=env.addr("anna"))])
    assert service.fetch_all(env.paths, config).ok
    assert len(env.local("anna")) == 3 and env.local("ben") == []
    # Deliveries run on parallel SMTP connections, so arrival order is not the provider's order.
    first = [m for m in env.local("anna") if b"Body of message 1." in m]
    assert len(first) == 1 and first[0].startswith(b"Return-Path: <sender1@remote.test>")


def test_5xx_recipient_goes_to_fallback_4xx_stays(env: Env) -> None:
    env.users("anna")
    unknown = env.addr("nobody")  # local domain, but no such mailbox: Postfix answers 550
    env.fill([message(1, unknown), message(2, env.addr("anna"))])
    config = env.write_config()
    summary = service.fetch_all(env.paths, config)
    assert summary.ok, summary.lines()
    fallback = env.local("postmaster")
    assert len(fallback) == 1 and b"X-SmartPop-Fallback: " + unknown.encode() + b" refused: 550" in fallback[0]
    assert len(env.local("anna")) == 1
    assert env.left_on_provider() == 0
    assert summary.results["sammel"].fallback == 1


def test_wrong_password_and_bad_tls_are_one_line_and_others_still_run(env: Env, tmp_path) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    other_ca = tmp_path / "other-ca"
    from support.certs import make_certs
    wrong_ca = str(make_certs(other_ca).ca_cert)
    config = env.write_config([
        env.account(name="badpass", password="wrong-password"),
        env.account(name="badtls", ca_file=wrong_ca),
        env.account(name="closed", port=1),
        env.account(name="good"),
    ])
    summary = service.fetch_all(env.paths, config)
    results = summary.results
    assert not summary.ok
    assert "refused" in results["badpass"].error and "\n" not in results["badpass"].error
    assert "not trusted" in results["badtls"].error
    assert "refused" in results["closed"].error
    assert results["good"].collected == 1 and len(env.local("anna")) == 1
    status = json.loads(env.run_cli("status", "--json").stdout)
    by_name = {a["name"]: a for a in status["accounts"]}
    assert "refused" in by_name["badpass"]["last_error"]
    assert by_name["good"]["collected"] == 1 and by_name["good"]["waiting"] == 0
    assert env.password not in json.dumps(status)


def test_connection_tester(env: Env) -> None:
    env.users()
    env.fill([message(1, "x@remote.test"), message(2, "x@remote.test")])
    config = env.write_config()
    answer = service.test_connection(env.paths, config.accounts[0])
    assert "2 message(s) waiting" in answer and "Dovecot" in answer
    bad = env.write_config([env.account(password="nope")]).accounts[0]
    with pytest.raises(AuthError):
        service.test_connection(env.paths, bad)
    with pytest.raises(ConnectError):
        service.test_connection(env.paths, env.write_config([env.account(port=1)]).accounts[0], timeout=5)
    assert env.left_on_provider() == 2


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_keep_on_server_never_refetches_and_delete_after_days(env: Env, protocol: str) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna")), message(2, env.addr("anna"))])
    config = env.write_config([env.account(protocol=protocol, keep_on_server=True, delete_after_days=3)])
    assert service.fetch_all(env.paths, config).ok
    assert service.fetch_all(env.paths, config).results["sammel"].collected == 0
    assert len(env.local("anna")) == 2 and env.left_on_provider() == 2
    backdate_done(env.paths.state_db, "sammel", 2 * 86400)
    assert service.fetch_all(env.paths, config).ok
    assert env.left_on_provider() == 2  # 2 days old: kept
    backdate_done(env.paths.state_db, "sammel", 2 * 86400)
    result = service.fetch_all(env.paths, config).results["sammel"]
    assert result.deleted == 2 and result.collected == 0
    assert env.left_on_provider() == 0 and len(env.local("anna")) == 2


def test_multidrop_copies_delivered_once(env: Env) -> None:
    env.users("anna", "ben")
    shared = "<same.copy@remote.test>"
    copies = [message(1, env.addr("anna"), msgid=shared, body="same body\n"),
              message(1, env.addr("ben"), msgid=shared, body="same body\n"),
              message(1, env.addr("anna"), msgid=shared, body="same body\n")]
    env.fill(copies)
    config = env.write_config()
    assert service.fetch_all(env.paths, config).ok
    assert len(env.local("anna")) == 1 and len(env.local("ben")) == 1
    assert env.left_on_provider() == 0


def test_aliases_and_to_cc_fallback(env: Env) -> None:
    env.users("anna", "ben")
    info = env.addr("info")
    no_envelope = (f"From: x@remote.test\nTo: {info}\nCc: other@remote.test\nSubject: via To\n"
                   f"Message-ID: <noenv@remote.test>\n\nhello\n").encode()
    env.fill([no_envelope, message(2, info)])
    config = env.write_config(aliases={info: [env.addr("anna"), env.addr("ben")]})
    assert service.fetch_all(env.paths, config).ok
    assert len(env.local("anna")) == 2 and len(env.local("ben")) == 2


def test_explain_routing_is_pure(env: Env) -> None:
    config = env.write_config()
    decision = service.explain_routing(config, config.accounts[0],
                                       f"Delivered-To: {env.catchall}\nX-Original-To: {env.addr('anna')}\n\n".encode())
    assert decision.recipients == [env.addr("anna")] and decision.rule == "X-Original-To"


def test_cli_fetch_and_check_exit_codes(env: Env) -> None:
    env.users("anna")
    env.fill([message(1, env.addr("anna"))])
    env.write_config()
    check = env.run_cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sammel: ok" in check.stdout and "1 message(s) waiting" in check.stdout
    fetch = env.run_cli("fetch")
    assert fetch.returncode == 0 and "sammel: 1 collected" in fetch.stdout
    # The routing line of each message goes to the log file, not to the terminal (or a Task
    # Scheduler mail); a warning still shows on stderr, and -v shows everything.
    logged = (env.data / "smartpop.log").read_text()
    assert "rule Delivered-To" in logged and "rule Delivered-To" not in fetch.stderr, fetch.stderr
    env.fill([message(2, env.addr("anna"))])
    verbose = env.run_cli("-v", "fetch")
    assert verbose.returncode == 0 and "rule Delivered-To" in verbose.stderr
    env.write_config([env.account(password="wrong-one")])
    assert env.run_cli("check").returncode == 1
    failed = env.run_cli("fetch")
    assert failed.returncode == 1 and "refused" in failed.stdout
    assert env.password not in failed.stdout + failed.stderr and "wrong-one" not in failed.stdout + failed.stderr
    assert env.run_cli("fetch", "--account", "nope").returncode == 2


def test_imap_server_without_uidplus_uses_expunge(tmp_path) -> None:
    from support.mailstack import MailStack, have_mail_servers

    if not have_mail_servers():
        pytest.skip("needs the mail servers")
    # A provider whose IMAP lacks UIDPLUS (no UID EXPUNGE): plain EXPUNGE after \Deleted.
    stack = MailStack.start(dovecot_extra="imap_capability = IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE")
    try:
        env = Env(stack, tmp_path)
        env.users("anna")
        env.fill([message(1, env.addr("anna")), message(2, env.addr("anna"))])
        config = env.write_config([env.account(protocol="imap")])
        from smartpop.collector.imap import ImapSource

        source = ImapSource.connect(config.accounts[0], 10)
        assert not source._uidplus
        source.abort()
        assert service.fetch_all(env.paths, config).ok
        assert len(env.local("anna")) == 2 and env.left_on_provider() == 0
        env.cleanup()
    finally:
        stack.stop()


def test_a_message_that_breaks_the_code_does_not_stop_the_run(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from smartpop.collector import placer, recipients

    env.users("anna")
    env.fill([message(1, env.addr("anna")), message(2, env.addr("anna"), msgid="<boom@remote.test>"),
              message(3, env.addr("anna"))])
    real = recipients.decide

    def fragile(fields, policy):  # simulates a bug triggered by one message
        if any(f.value == "<boom@remote.test>" for f in fields):
            raise ValueError("simulated bug")
        return real(fields, policy)

    monkeypatch.setattr(placer.recipients, "decide", fragile)
    result = service.fetch_all(env.paths, env.write_config()).results["sammel"]
    assert result.collected == 2 and not result.ok and "simulated bug" in result.error
    assert len(env.local("anna")) == 2 and env.left_on_provider() == 1  # kept, never lost
