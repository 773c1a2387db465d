"""End to end: the real `smartpop relay` CLI patches a running Postfix, which relays to aiosmtpd providers.

Point 6 of issue 4: STARTTLS + AUTH to the default provider with verified TLS, a per-sender
provider over wrapper-mode (implicit) TLS with its own credentials, a wrong password leaves
the mail deferred in the queue, no open relay before or after, and rollback restores the
config dir byte-identical (master.cf included).
"""

from __future__ import annotations

import json
import shutil
import smtplib
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

from support import certs as certs_mod
from support.certs import make_certs
from support.postfix_relay import (
    RelayPostfix,
    config_digest,
    have_postfix,
    maps_dir_for,
    run_relay,
    tree_digest,
    write_config,
)
from support.upstream_smtp import Upstream

pytestmark = [
    pytest.mark.skipif(not have_postfix(), reason="needs root and the postfix tools"),
    # The wrapper-mode provider checks TLS itself (aiosmtpd's own check only knows STARTTLS).
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

MAIN_USER, MAIN_PW = "anna@firma.test", "main pw#1"
OTHER_USER, OTHER_PW = "bob@zweit.test", "zweit:Pw$2"
# Dot-stuffing, a long line, 8-bit and trailing spaces: the body must arrive byte for byte.
BODY = (b"Hello,\r\n.leading dot line\r\n..two dots\r\ntrailing spaces   \r\n" + b"x" * 900 + b"\r\n"
        b"caf\xc3\xa9 \xe2\x82\xac\r\n\r\n-- \r\nAnna\r\n")


def _message(sender: str, recipient: str, subject: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + BODY


def _body(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> certs_mod.TestCerts:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def rig(certs: certs_mod.TestCerts) -> Iterator[Tuple[RelayPostfix, Upstream, Upstream]]:
    postfix = RelayPostfix.start()
    main = Upstream(certs, "starttls", {MAIN_USER: MAIN_PW}).start()
    other = Upstream(certs, "ssl", {OTHER_USER: OTHER_PW}).start()
    try:
        yield postfix, main, other
    finally:
        main.stop()
        other.stop()
        postfix.stop()


def _relay(main: Upstream, other: Upstream, password: str = MAIN_PW) -> Dict[str, object]:
    return {"enabled": True, "host": "localhost", "port": main.port, "security": "starttls",
            "username": MAIN_USER, "password": password,
            "sender_relays": [{"sender": "@zweit.test", "host": "localhost", "port": other.port,
                               "security": "ssl", "username": OTHER_USER, "password": OTHER_PW}]}


def _probe_refused(postfix: RelayPostfix) -> Tuple[int, bytes]:
    """An unauthenticated outside client tries outside -> outside on the public smtpd port."""
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as smtp:
        smtp.ehlo("probe.outside.test")
        assert smtp.mail("spammer@outside.test")[0] == 250
        code, text = smtp.rcpt("victim@far-away.test")
        smtp.rset()
    return code, text


def _clear(*upstreams: Upstream) -> None:
    for upstream in upstreams:
        with upstream.lock:
            upstream.messages.clear()
            upstream.auth_failures.clear()


def test_relay_starttls_and_per_sender_wrapper_tls_then_rollback(
        rig: Tuple[RelayPostfix, Upstream, Upstream], certs: certs_mod.TestCerts, tmp_path: Path) -> None:
    postfix, main, other = rig
    _clear(main, other)
    data = tmp_path / "data"
    before = config_digest(postfix.etc)
    code, text = _probe_refused(postfix)
    assert code == 554 and b"Relay access denied" in text

    write_config(data, _relay(main, other))
    applied = run_relay(data, "apply", postfix.etc, ca_file=certs.ca_cert)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    verified = run_relay(data, "verify", postfix.etc, ca_file=certs.ca_cert)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    live = postfix.postconf_n()
    assert live["relayhost"] == f"[localhost]:{main.port}"
    assert live["smtp_tls_security_level"] == "secure"  # verified TLS, never 'may'
    assert live["smtp_tls_CAfile"] == str(certs.ca_cert.resolve())
    assert "smartpop-ssl unix" in (postfix.etc / "master.cf").read_text()
    # What the UI and `smartpop status` show, computed without root and without SSL_CERT_FILE.
    status = run_relay(data, "status", postfix.etc, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "applied", status.stdout

    postfix.submit(MAIN_USER, ["ext@far-away.test"], _message(MAIN_USER, "ext@far-away.test", "via main"))
    postfix.submit("carl@zweit.test", ["ext2@far-away.test"],
                   _message("carl@zweit.test", "ext2@far-away.test", "via zweit"))
    got_main = main.wait_messages(1)
    got_other = other.wait_messages(1)
    assert len(got_main) == 1 and len(got_other) == 1, postfix.log()[-3000:]

    assert got_main[0].user == MAIN_USER and got_main[0].mechanism in ("PLAIN", "LOGIN")
    assert got_main[0].tls_version in ("TLSv1.2", "TLSv1.3")
    assert got_main[0].mail_from == MAIN_USER and got_main[0].rcpt_tos == ["ext@far-away.test"]
    assert _body(got_main[0].data) == BODY

    assert got_other[0].user == OTHER_USER and got_other[0].mechanism in ("PLAIN", "LOGIN")
    assert got_other[0].tls_version in ("TLSv1.2", "TLSv1.3")
    assert got_other[0].mail_from == "carl@zweit.test"
    assert _body(got_other[0].data) == BODY
    log = postfix.log()
    # Postfix checked the chain against the test CA and the name 'localhost' (level secure).
    assert f"Verified TLS connection established to localhost[127.0.0.1]:{main.port}" in log
    assert f"Verified TLS connection established to localhost[127.0.0.1]:{other.port}" in log
    assert postfix.wait_queue(0) == []

    code, text = _probe_refused(postfix)
    assert code == 554 and b"Relay access denied" in text

    rolled = run_relay(data, "rollback", postfix.etc)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert json.loads(run_relay(data, "status", postfix.etc, "--json").stdout)["state"] == "pending"
    assert config_digest(postfix.etc) == before  # main.cf, master.cf: byte-identical, same modes; no maps left
    code, _ = _probe_refused(postfix)
    assert code == 554


def test_wrong_password_defers_in_queue_and_is_delivered_after_fix(
        rig: Tuple[RelayPostfix, Upstream, Upstream], certs: certs_mod.TestCerts, tmp_path: Path) -> None:
    postfix, main, other = rig
    _clear(main, other)
    data = tmp_path / "data"
    before = config_digest(postfix.etc)
    write_config(data, _relay(main, other, password="wrong password"))
    assert run_relay(data, "apply", postfix.etc, ca_file=certs.ca_cert).returncode == 0

    postfix.submit(MAIN_USER, ["ext@far-away.test"], _message(MAIN_USER, "ext@far-away.test", "wrong pw"))
    queue = postfix.wait_queue(1, status="deferred")
    assert [e.get("queue_name") for e in queue] == ["deferred"], postfix.log()[-3000:]
    entry = queue[0]
    assert entry["sender"] == MAIN_USER  # the original, not a bounce from MAILER-DAEMON
    reasons = " ".join(str(r.get("delay_reason", "")) for r in entry["recipients"])  # type: ignore[union-attr]
    assert "SASL authentication failed" in reasons and "535" in reasons
    assert str(entry["queue_id"]) in postfix.queue_listing()  # what mailq shows
    assert main.messages == [] and main.auth_failures
    assert "status=bounced" not in postfix.log()

    # The admin fixes the password: the root task re-applies, the queued mail goes out.
    write_config(data, _relay(main, other))
    assert run_relay(data, "task", postfix.etc, ca_file=certs.ca_cert).returncode == 0
    postfix.flush()
    got = main.wait_messages(1)
    assert len(got) == 1 and got[0].user == MAIN_USER and _body(got[0].data) == BODY
    assert postfix.wait_queue(0) == []

    assert run_relay(data, "rollback", postfix.etc).returncode == 0
    assert config_digest(postfix.etc) == before


def test_untrusted_certificate_is_refused_not_sent(
        rig: Tuple[RelayPostfix, Upstream, Upstream], tmp_path: Path) -> None:
    postfix, main, other = rig
    _clear(main, other)
    data = tmp_path / "data"
    before = config_digest(postfix.etc)
    stranger = make_certs(tmp_path / "other-ca")  # a CA that did not sign the provider's cert
    write_config(data, _relay(main, other))
    assert run_relay(data, "apply", postfix.etc, ca_file=stranger.ca_cert).returncode == 0
    postfix.submit(MAIN_USER, ["ext@far-away.test"], _message(MAIN_USER, "ext@far-away.test", "mitm"))
    queue = postfix.wait_queue(1, status="deferred")
    assert [e.get("queue_name") for e in queue] == ["deferred"], postfix.log()[-3000:]
    reasons = " ".join(str(r.get("delay_reason", "")) for r in queue[0]["recipients"])  # type: ignore[union-attr]
    assert "certificate" in reasons.lower()
    assert main.messages == [] and main.auth_failures == []  # the password never left Postfix
    subprocess.run(["postsuper", "-c", str(postfix.etc), "-d", "ALL"], capture_output=True, check=True)
    assert run_relay(data, "rollback", postfix.etc).returncode == 0
    assert config_digest(postfix.etc) == before



def test_maps_outside_the_postfix_dir_relay_and_survive_a_mailplus_upgrade(
        rig: Tuple[RelayPostfix, Upstream, Upstream], certs: certs_mod.TestCerts, tmp_path: Path) -> None:
    # Issue 13 §3: the password maps live in a root-only dir outside MailPlus's target/etc; an
    # upgrade that puts back MailPlus's shipped files loses nothing, and the next task run
    # brings the relay back.
    postfix, main, other = rig
    _clear(main, other)
    data = tmp_path / "data"
    maps = maps_dir_for(postfix.etc)
    shipped = tmp_path / "shipped"
    shutil.copytree(postfix.etc, shipped)
    before = config_digest(postfix.etc)
    write_config(data, _relay(main, other))
    assert run_relay(data, "task", postfix.etc, ca_file=certs.ca_cert).returncode == 0
    assert not [p.name for p in postfix.etc.iterdir() if p.name.startswith("smartpop_")]
    assert maps.stat().st_uid == 0 and stat.S_IMODE(maps.stat().st_mode) == 0o700
    assert stat.S_IMODE((maps / "smartpop_sasl_passwd.db").stat().st_mode) == 0o600
    assert postfix.postconf_n()["smtp_sasl_password_maps"] == f"hash:{maps}/smartpop_sasl_passwd"
    maps_before = tree_digest(maps)

    # The upgrade: target/etc comes back as shipped and MailPlus restarts its Postfix.
    shutil.rmtree(postfix.etc)
    shutil.copytree(shipped, postfix.etc)
    subprocess.run(["postfix", "-c", str(postfix.etc), "reload"], capture_output=True, check=True)
    assert tree_digest(maps) == maps_before
    assert json.loads(run_relay(data, "status", postfix.etc, "--json").stdout)["state"] == "drift"

    proc = run_relay(data, "task", postfix.etc, ca_file=certs.ca_cert)
    assert proc.returncode == 0 and "re-applied after drift" in proc.stdout, proc.stdout + proc.stderr
    postfix.submit(MAIN_USER, ["ext@far-away.test"], _message(MAIN_USER, "ext@far-away.test", "after upgrade"))
    postfix.submit("carl@zweit.test", ["ext2@far-away.test"],
                   _message("carl@zweit.test", "ext2@far-away.test", "after upgrade, zweit"))
    got_main, got_other = main.wait_messages(1), other.wait_messages(1)
    assert len(got_main) == 1 and len(got_other) == 1, postfix.log()[-3000:]
    assert got_main[0].user == MAIN_USER and got_other[0].user == OTHER_USER  # SASL from the moved maps
    assert _body(got_main[0].data) == BODY and postfix.wait_queue(0) == []

    assert run_relay(data, "rollback", postfix.etc).returncode == 0
    assert config_digest(postfix.etc) == before and not maps.exists()
