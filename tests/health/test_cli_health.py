"""`smartpop health [--json]`: exit 0 with warnings only, 1 with a problem; the report is stored; no password shown."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Tuple

import pytest

from smartpop.cli import main
from smartpop.health import service
from smartpop.health.dnsquery import Resolver
from support.upstream_smtp import Upstream

if TYPE_CHECKING:  # a module-level TestCerts would make pytest try to collect it
    from support.certs import TestCerts

USER = "relay@good.test"
PASSWORD = "pw-Relay-Cli-77"
FETCH_PASSWORD = "pw-Fetch-Cli-88"


@pytest.fixture
def servers(certs: TestCerts) -> Iterator[Tuple[Upstream, Upstream]]:
    """The provider's submission server (STARTTLS) and a TLS server standing in for its POP3S port."""
    submission = Upstream(certs, "starttls", {USER: PASSWORD}).start()
    pop3s = Upstream(certs, "ssl", {}).start()
    yield submission, pop3s
    submission.stop()
    pop3s.stop()


def write_config(data: Path, submission: int, pop3s: int, ca: Path, password: str) -> None:
    """config.json: one account on `pop3s`, the relay on `submission`, good.test as the local domain."""
    document: Dict[str, Any] = {
        "accounts": [{"name": "sammel", "protocol": "pop3", "host": "localhost", "port": pop3s, "security": "ssl",
                      "username": "sammel@good.test", "password": FETCH_PASSWORD, "ca_file": str(ca)}],
        "local_domains": ["good.test"], "fallback_recipient": "postmaster@good.test",
        "relay": {"enabled": True, "host": "localhost", "port": submission, "security": "starttls",
                  "username": USER, "password": password},
    }
    (data / "config.json").write_text(json.dumps(document))
    (data / "config.json").chmod(0o600)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, resolver: Resolver, certs: TestCerts) -> None:
    """The CLI's resolver asks the local DNS server; Postfix's CA bundle is the test CA ($SSL_CERT_FILE)."""
    monkeypatch.setattr(service, "Resolver", lambda: resolver)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))


def run(data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Tuple[int, str, str]:
    """Run `smartpop --data DATA health ...`; the exit code, stdout and stderr (log lines)."""
    code = main(["--data", str(data), "health", *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("cli_env")
def test_health_json_warnings_only_exits_0(data_dir: Path, servers: Tuple[Upstream, Upstream], certs: TestCerts,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Relay login and certificates ok, DNS with warnings: exit 0, JSON on stdout, stored in DATA/health.json."""
    submission, pop3s = servers
    write_config(data_dir, submission.port, pop3s.port, certs.ca_cert, PASSWORD)
    code, output, log = run(data_dir, capsys, "--json")
    report = json.loads(output)
    statuses = {(f["check"], f["subject"]): f["status"] for f in report["findings"]}
    assert statuses[("relay.login", "relay")] == "ok"
    assert statuses[("certificate", f"localhost:{pop3s.port}")] == "ok"
    assert statuses[("certificate", f"localhost:{submission.port}")] == "ok"
    assert statuses[("spf.record", "good.test")] == "ok"
    assert report["status"] == "warning" and code == 0
    assert submission.messages == []
    stored = data_dir / "health.json"
    assert json.loads(stored.read_text()) == report
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    for text in (output, log, stored.read_text()):
        assert PASSWORD not in text and FETCH_PASSWORD not in text


@pytest.mark.usefixtures("cli_env")
def test_health_problem_exits_1_without_the_password(data_dir: Path, servers: Tuple[Upstream, Upstream],
                                                     certs: TestCerts, capsys: pytest.CaptureFixture[str]) -> None:
    """A refused relay login is a problem: exit 1, in text and JSON, the server's answer shown, no password."""
    submission, pop3s = servers
    wrong = "pw-Wrong-Cli-99"
    write_config(data_dir, submission.port, pop3s.port, certs.ca_cert, wrong)
    code, text_output, text_log = run(data_dir, capsys)
    assert code == 1
    assert "PROBLEM" in text_output and "relay.login" in text_output and "535" in text_output
    code, output, log = run(data_dir, capsys, "--json")
    assert code == 1 and json.loads(output)["status"] == "problem"
    for text in (text_output, text_log, output, log, (data_dir / "health.json").read_text()):
        assert wrong not in text and PASSWORD not in text and FETCH_PASSWORD not in text


def test_health_without_config_is_a_config_error(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No config.json: exit 2 like every other command."""
    code, _out, err = run(data_dir, capsys)
    assert code == 2 and "config.json" in err


def test_run_all_logs_in_to_each_per_sender_relay(data_dir: Path, servers: Tuple[Upstream, Upstream],
                                                  certs: TestCerts, resolver: Resolver) -> None:
    """run_all: the main relay and a per-sender relay are each logged in to and judged on their own."""
    from smartpop.config.schema import parse_config
    from smartpop.paths import Paths

    submission, other = servers
    other.users["zweit@zweit.test"] = "pw-Zweit-Right-1"
    config = parse_config({
        "local_domains": ["good.test"],
        "relay": {"enabled": True, "host": "localhost", "port": submission.port, "security": "starttls",
                  "username": USER, "password": PASSWORD,
                  "sender_relays": [{"sender": "@zweit.test", "host": "localhost", "port": other.port,
                                     "security": "ssl", "username": "zweit@zweit.test",
                                     "password": "pw-Zweit-Wrong-2"}]},
    })
    report = service.run_all(Paths(data_dir), config, resolver=resolver, ca_file=str(certs.ca_cert), store=False)
    logins = {f["subject"]: f["status"] for f in report["findings"] if f["check"] == "relay.login"}
    assert logins == {"relay": "ok", "relay for @zweit.test": "problem"}
    assert report["status"] == "problem" and not (data_dir / "health.json").exists()
    assert "pw-Zweit-Wrong-2" not in json.dumps(report)


@pytest.mark.usefixtures("cli_env")
def test_health_round_trip_cli_sends_and_reports(data_dir: Path, servers: Tuple[Upstream, Upstream], certs: TestCerts,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`health --round-trip --wait 0`: one message via the relay login to the catch-all, 'on its way', exit 0."""
    submission, pop3s = servers
    write_config(data_dir, submission.port, pop3s.port, certs.ca_cert, PASSWORD)
    code, output, log = run(data_dir, capsys, "--round-trip", "--wait", "0")
    assert code == 0, output + log
    assert "round trip: sent to sammel@good.test via localhost:" in output and "on its way" in output
    sent = submission.wait_messages(1)
    assert len(sent) == 1 and sent[0].rcpt_tos == ["sammel@good.test"] and sent[0].mail_from == USER
    assert PASSWORD not in output + log
