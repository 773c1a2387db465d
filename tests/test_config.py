"""config.json: validation messages, unknown keys, migration, atomic 0600 writes, redaction."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict

import pytest

from smartpop.config import store
from smartpop.config.migrate import migrate
from smartpop.config.schema import parse_config, render_config
from smartpop.config.wizard import document_from_wizard
from smartpop.errors import ConfigError
from smartpop.log import RedactingFilter
from smartpop.paths import Paths
from support.samples import sample_document


def error_for(document: Dict[str, Any]) -> ConfigError:
    """The ConfigError parse_config raises for `document`."""
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    return info.value


def test_sample_document_round_trips() -> None:
    """render(parse(doc)) reproduces the document, with defaults filled in."""
    doc = sample_document()
    rendered = render_config(parse_config(doc))
    assert rendered["accounts"][0]["password"] == "s3cret-Fetch!"
    assert rendered["accounts"][0]["interval"] == 60
    assert parse_config(rendered) == parse_config(doc)
    assert next(iter(rendered)) == "schema_version"


INVALID_VALUES = [
    (lambda d: d.update(colour="blue"), "colour", "remove 'colour'"),
    (lambda d: d["accounts"][0].update(passwort="x"), "accounts[0].passwort", "remove"),
    (lambda d: d["accounts"][0].update(port="abc"), "accounts[0].port", "number between 1 and 65535"),
    (lambda d: d["accounts"][0].update(port=70000), "accounts[0].port", "number between 1 and 65535"),
    (lambda d: d["accounts"][0].update(security="none"), "accounts[0].security", "allow_insecure"),
    (lambda d: d["accounts"][0].update(protocol="smtp"), "accounts[0].protocol", "pop3, imap"),
    (lambda d: d["accounts"][0].update(host="pop.example.de\nrelayhost=evil"), "accounts[0].host", "line breaks"),
    (lambda d: d["accounts"][0].update(password="a\nb"), "accounts[0].password", "without line breaks"),
    (lambda d: d["accounts"][0].update(mode="single"), "accounts[0].deliver_to", "deliver_to"),
    (lambda d: d["accounts"][0].pop("host"), "accounts[0].host", "add accounts[0].host"),
    (lambda d: d.update(local_domains=[]), "local_domains", "mail domains"),
    (lambda d: d.update(fallback_recipient="nobody"), "fallback_recipient", "anna@firma.de"),
    (lambda d: d.update(aliases={"info@firma.de": []}), "aliases['info@firma.de']", "at least one"),
    (lambda d: d["relay"].update(enabled=True, host=None), "relay.host", "relay.enabled to false"),
    (lambda d: d["relay"].update(security="none"), "relay.security", "ssl, starttls"),
    (lambda d: d["relay"].update(sender_relays=[{"sender": "zweit", "host": "h.de", "username": "u"}]),
     "relay.sender_relays[0].sender", "anna@firma.de"),
    (lambda d: d["web"].update(port=80), "web.port", "1025"),
    (lambda d: d.update(accounts=[d["accounts"][0], dict(d["accounts"][0])]), "accounts[1].name", "own name"),
    (lambda d: d.update(schema_version=7), "schema_version", "upgrade SmartPop"),
]


@pytest.mark.parametrize(("mutate", "key", "fix"), INVALID_VALUES)
def test_invalid_values_name_the_key_and_the_fix(mutate: Any, key: str, fix: str) -> None:
    """Every rejection says which key is wrong and how to fix it."""
    doc = sample_document()
    mutate(doc)
    error = error_for(doc)
    assert error.key == key
    assert str(error).startswith(f"{key}: ")
    assert fix in str(error)


@pytest.mark.parametrize(("mutate", "key", "fix"), INVALID_VALUES)
def test_invalid_values_carry_a_message_id_for_the_ui(mutate: Any, key: str, fix: str) -> None:
    """Besides the English text, every rejection has a message id and parameters (the web UI translates them)."""
    doc = sample_document()
    mutate(doc)
    error = error_for(doc)
    assert re.fullmatch(r"[a-z_]+", error.code), str(error)
    assert all(isinstance(value, (str, int)) for value in error.params.values())
    assert doc["accounts"][0]["password"] not in json.dumps(error.params)


def test_passwords_are_not_echoed_in_errors() -> None:
    """A rejected password is described, never quoted."""
    doc = sample_document()
    doc["accounts"][0]["password"] = "geheim\x07"
    error = error_for(doc)
    assert "geheim" not in str(error)
    assert error.code == "secret_control_characters" and error.params == {}


def test_insecure_needs_explicit_opt_in() -> None:
    """security 'none' is accepted only with allow_insecure, and gets the plain default port."""
    doc = sample_document()
    doc["accounts"][0].update(security="none", allow_insecure=True, port=None)
    assert parse_config(doc).accounts[0].port == 110


def test_repr_and_logs_hide_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """Neither repr(config) nor a log line shows a password."""
    config = parse_config(sample_document())
    text = repr(config)
    assert "s3cret-Fetch!" not in text and "s3cret-Relay!" not in text
    assert "********" in text
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "login with %s and password=%s",
                               ("s3cret-Fetch!", "unregistered-Value"), None)
    RedactingFilter().filter(record)
    assert "s3cret-Fetch!" not in record.getMessage()
    assert "unregistered-Value" not in record.getMessage()


def test_save_is_atomic_and_private(configured_data_dir: Path) -> None:
    """save() writes mode 0600 and leaves no temp file behind."""
    paths = Paths(configured_data_dir)
    config = store.load(paths)
    config.local_domains.append("firma.com")
    os.chmod(paths.config, 0o644)
    store.save(paths, config)
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600
    assert json.loads(paths.config.read_text())["local_domains"] == ["firma.de", "firma.com"]
    leftovers = [p.name for p in configured_data_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_failed_write_keeps_the_old_file(configured_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash during the write (here: fsync fails) leaves the previous config intact."""
    paths = Paths(configured_data_dir)
    before = paths.config.read_bytes()
    config = store.load(paths)
    config.local_domains.append("firma.com")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        store.save(paths, config)
    assert paths.config.read_bytes() == before
    assert [p.name for p in configured_data_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_update_rejects_an_invalid_change(configured_data_dir: Path) -> None:
    """update() validates before writing; the file stays as it was."""
    paths = Paths(configured_data_dir)
    before = paths.config.read_bytes()

    def break_it(config: Any) -> None:
        config.accounts[0].port = 0

    with pytest.raises(ConfigError):
        store.update(paths, break_it)
    assert paths.config.read_bytes() == before


def test_missing_and_broken_files_are_config_errors(data_dir: Path) -> None:
    """No file, or bad JSON, gives a ConfigError that says what to do."""
    paths = Paths(data_dir)
    with pytest.raises(ConfigError, match="does not exist"):
        store.load(paths)
    paths.config.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        store.load(paths)


def test_schema0_migrates_and_is_persisted(data_dir: Path) -> None:
    """A pre-versioning config is converted, saved, and the original kept."""
    paths = Paths(data_dir)
    old = {"accounts": [{"name": "a", "host": "pop.gmx.net", "ssl": False, "keep": 1, "username": "u@gmx.de",
                         "password": "pw-123", "mode": "single", "deliver_to": "anna@firma.de"}],
           "fallback": "postmaster@firma.de"}
    raw = json.dumps(old).encode()
    paths.config.write_bytes(raw)
    config = store.load(paths)
    account = config.accounts[0]
    assert (account.security, account.port, account.keep_on_server) == ("starttls", 110, True)
    assert config.fallback_recipient == "postmaster@firma.de"
    assert json.loads(paths.config.read_text())["schema_version"] == 1
    assert (data_dir / "config.json.pre-migration").read_bytes() == raw
    assert migrate(json.loads(paths.config.read_text()))[1] is False


def test_wizard_merge_keeps_other_settings() -> None:
    """A re-install's wizard answers replace what they cover; other accounts and aliases stay."""
    existing = sample_document()
    existing["accounts"].append({"name": "anna", "host": "imap.gmx.net", "protocol": "imap", "username": "a@gmx.de",
                                 "password": "anna-pw", "mode": "single", "deliver_to": "anna@firma.de"})
    env = {"wizard_fetch_host": "pop.strato.de", "wizard_fetch_port": "995", "wizard_fetch_user": "s@firma.de",
           "wizard_fetch_password": "", "wizard_relay_enable": "false", "wizard_web_port": "9000"}
    doc = document_from_wizard(env, existing)
    config = parse_config(migrate(doc)[0])
    assert [a.name for a in config.accounts] == ["sammelpostfach", "anna"]
    assert config.accounts[0].host == "pop.strato.de"
    assert config.accounts[0].password.reveal() == "s3cret-Fetch!"
    assert config.aliases == {"info@firma.de": ["anna@firma.de", "ben@firma.de"]}
    assert config.relay.enabled is False and config.web.port == 9000


HOSTILE_HOSTS = [
    "fe80::1%x ${mynetworks} #,",  # a scope id Python >= 3.9 would accept, carrying main.cf syntax
    "fe80::1%eth0", "[fe80::1%eth0]", "::1%1", "[mail.example.com]", "[1.2.3.4]", "[::1]]", "[]",
    "010.1.1.1", "1.2.3", "256.1.1.1", "::ffff:010.1.1.1", "1.2.3.4:25", "mail.example.com:587",
    "mail example.com", "mail.example.com,evil.test", "$myhostname", "mail#x.de", "a/b.de", "ä.de",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_host_names_and_ip_literals_by_an_explicit_character_set(host: str) -> None:
    """The same hosts are refused on 3.8 and on 3.13: a character check runs before ipaddress."""
    for where in ("accounts", "relay", "delivery", "sender"):
        doc = sample_document()
        if where == "accounts":
            doc["accounts"][0]["host"] = host
        elif where == "relay":
            doc["relay"]["host"] = host
        elif where == "delivery":
            doc["delivery"]["host"] = host
        else:
            doc["relay"]["sender_relays"] = [{"sender": "@zweit.de", "host": host, "port": 465, "security": "ssl",
                                             "username": "z", "password": "Zweit-Pa55"}]
        exc = error_for(doc)
        assert exc.code == "not_a_host" and exc.key.endswith(".host"), (where, str(exc))


@pytest.mark.parametrize(("host", "stored"), [
    ("Mail.Example.COM.", "mail.example.com"), ("1.2.3.4", "1.2.3.4"), ("2001:DB8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"), ("::ffff:1.2.3.4", "::ffff:1.2.3.4"), ("::1", "::1"),
    ("xn--mller-kva.de", "xn--mller-kva.de"), ("3com.com", "3com.com"),
])
def test_valid_hosts_are_stored_in_one_form_on_every_python(host: str, stored: str) -> None:
    doc = sample_document()
    doc["relay"]["host"] = host
    assert parse_config(doc).relay.host == stored


def test_each_default_is_stated_once_by_the_schema_records() -> None:
    """A setting config.json leaves out takes the value defaults() reports, in every record."""
    from smartpop.config.schema import (
        MODES,
        PROTOCOLS,
        RELAY_SECURITIES,
        SECURITIES,
        Account,
        Alerts,
        Delivery,
        Relay,
        SenderRelay,
        Trail,
        Web,
        default_of,
        defaults,
    )

    minimal = {"accounts": [{"name": "m", "host": "pop.example.com", "username": "u", "password": "p", "mode": "single",
                             "deliver_to": "anna@firma.de"}],
               "relay": {"sender_relays": [{"sender": "anna@firma.de", "host": "smtp.example.com", "username": "u",
                                            "password": "p"}]}}
    config = parse_config(minimal)
    account = config.accounts[0]
    for name, value in defaults(Account).items():
        if name not in ("mode", "deliver_to", "password"):
            assert getattr(account, name) == value, name
    assert (account.protocol, account.security, account.port) == ("pop3", "ssl", 995)
    assert config.relay.sender_relays[0].security == default_of(SenderRelay, "security") == "starttls"
    for record, parsed in ((Relay, config.relay), (Alerts, config.alerts), (Trail, config.trail),
                           (Delivery, config.delivery), (Web, config.web)):
        for name, value in defaults(record).items():
            if name not in ("sender_relays", "password", "webhook_url"):
                assert getattr(parsed, name) == value, (record.__name__, name)
    assert defaults(Delivery) == {"host": "127.0.0.1", "port": 25} and default_of(Web, "port") == 8765
    assert Relay().port == 587 and default_of(Relay, "security") == "starttls"
    with pytest.raises(KeyError):
        default_of(Account, "host")  # required: no default
    assert (PROTOCOLS, SECURITIES, RELAY_SECURITIES, MODES) == (["pop3", "imap"], ["ssl", "starttls", "none"],
                                                                 ["ssl", "starttls"], ["multidrop", "single"])
