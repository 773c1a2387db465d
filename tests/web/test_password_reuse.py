"""A stored password is reused (empty password field) only for the same protocol, host, port, security and
user name: otherwise an admin session or a stolen CSRF token could send it to any host."""

from __future__ import annotations

import html
import re
import socket
import threading
from typing import Any, Dict, Iterator, List

import pytest
from webrig import Browserless, Rig

from support.samples import sample_document

STORED = "s3cret-Fetch!"
STORED_RELAY = "s3cret-Relay!"
STORED_SENDER = "Zweit-Pa55word"
NEW = "n3w-Secret-Pa55!"
ASK = {"en": "The connection settings changed (protocol, server, port, encryption or user name), so the stored "
             "password is not used. Enter the password.",
       "de": "Die Verbindungsdaten wurden geändert (Protokoll, Server, Port, Verschlüsselung oder Benutzername), "
             "daher wird das gespeicherte Passwort nicht verwendet. Bitte das Passwort eingeben."}


class FakePop3:
    """A POP3 server on loopback that accepts any login and records every command it is sent."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.commands: List[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"+OK fake POP3 ready\r\n")
            for raw in reader:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.commands.append(line)
                verb = line.split(" ")[0].upper()
                conn.sendall(b"+OK\r\n.\r\n" if verb in ("CAPA", "UIDL", "LIST") and " " not in line else b"+OK\r\n")
                if verb == "QUIT":
                    return

    def passwords(self) -> List[str]:
        """The passwords this server was sent."""
        return [c[5:] for c in self.commands if c.upper().startswith("PASS ")]

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[List[FakePop3]]:
    """Two fake POP3 servers: the stored one and another one (e.g. an attacker's)."""
    pair = [FakePop3(), FakePop3()]
    yield pair
    for server in pair:
        server.close()


@pytest.fixture
def reuse_rig(servers: List[FakePop3]) -> Iterator[Rig]:
    """The sample config, its account pointing at the first fake server (plain POP3), one sender relay."""
    document = sample_document()
    document["accounts"][0].update(host="127.0.0.1", port=servers[0].port, security="none", allow_insecure=True)
    document["relay"]["sender_relays"] = [{"sender": "@zweit.de", "host": "smtp.strato.de", "port": 465,
                                           "security": "ssl", "username": "z@zweit.de", "password": STORED_SENDER}]
    environment = Rig(document)
    yield environment
    environment.stop()


def _account_form(servers: List[FakePop3], token: str, **changes: str) -> Dict[str, str]:
    form = {"csrf_token": token, "protocol": "pop3", "security": "none", "allow_insecure": "on",
            "host": "127.0.0.1", "port": str(servers[0].port), "username": "sammel@firma.de", "password": "",
            "mode": "multidrop", "enabled": "on", "interval": "60", "folder": "INBOX"}
    form.update(changes)
    return form


def _no_secrets(client: Browserless) -> None:
    for body in client.bodies:
        for secret in (STORED, STORED_RELAY, STORED_SENDER, NEW):
            assert secret not in body


def test_connection_test_sends_the_stored_password_only_to_the_stored_server(
        reuse_rig: Rig, servers: List[FakePop3]) -> None:
    admin = Browserless(reuse_rig, "admin")
    token = admin.csrf()
    stored, other = servers
    url = "/accounts/test?original=sammelpostfach"
    # Unchanged: the stored password is used, against the stored server.
    response = admin.post(url, data=_account_form(servers, token))
    assert response.status_code == 200 and response.json()["ok"] is True, response.text
    assert stored.passwords() == [STORED]
    # Any of protocol, host, port, security or user name changed, password left empty: refused, nothing sent.
    for lang in ("en", "de"):
        for changes in ({"port": str(other.port)}, {"host": "localhost"}, {"username": "other@firma.de"},
                        {"security": "ssl", "port": str(stored.port)}, {"protocol": "imap"}):
            response = admin.post(url, data=_account_form(servers, token, **changes), headers={"Accept-Language": lang})
            assert response.status_code == 422, (changes, response.text)
            assert response.json()["fields"] == {"password": ASK[lang]}, changes
    assert other.commands == [] and stored.passwords() == [STORED]
    # With a password typed in, the other server gets that one (and only that one).
    response = admin.post(url, data=_account_form(servers, token, port=str(other.port), password=NEW))
    assert response.status_code == 200 and response.json()["ok"] is True, response.text
    assert other.passwords() == [NEW]
    _no_secrets(admin)


@pytest.mark.parametrize("lang", ["en", "de"])
def test_saving_an_account_for_another_server_asks_for_the_password(
        reuse_rig: Rig, servers: List[FakePop3], lang: str) -> None:
    admin = Browserless(reuse_rig, "admin")
    token = admin.csrf()
    before = reuse_rig.config_document()
    for changes in ({"port": str(servers[1].port)}, {"host": "pop.evil.test"}, {"username": "x@evil.test"},
                    {"security": "starttls"}, {"protocol": "imap"}):
        response = admin.post("/accounts/sammelpostfach/edit", data=_account_form(servers, token, **changes),
                              headers={"Accept-Language": lang})
        assert response.status_code == 422, changes
        found = re.findall(r'id="err-password"[^>]*>(.*?)</div>', response.text, re.S)
        assert [html.unescape(f) for f in found] == [ASK[lang]], changes
        assert reuse_rig.config_document() == before
    # Other settings with the same server and user keep the stored password.
    response = admin.post("/accounts/sammelpostfach/edit", data=_account_form(servers, token, interval="300"))
    assert response.status_code == 302
    account = reuse_rig.config_document()["accounts"][0]
    assert account["interval"] == 300 and account["password"] == STORED
    # Another server with a password: saved with that password.
    response = admin.post("/accounts/sammelpostfach/edit",
                          data=_account_form(servers, token, port=str(servers[1].port), password=NEW))
    assert response.status_code == 302
    account = reuse_rig.config_document()["accounts"][0]
    assert account["port"] == servers[1].port and account["password"] == NEW
    assert servers[0].commands == [] and servers[1].commands == []
    _no_secrets(admin)


def _relay_form(token: str, **changes: str) -> Dict[str, str]:
    form = {"csrf_token": token, "enabled": "on", "host": "smtp.provider.de", "port": "587",
            "security": "starttls", "username": "relay@firma.de", "password": ""}
    form.update(changes)
    return form


@pytest.mark.parametrize("lang", ["en", "de"])
def test_relay_keeps_its_password_only_for_the_same_server(reuse_rig: Rig, lang: str) -> None:
    admin = Browserless(reuse_rig, "admin")
    token = admin.csrf()
    before = reuse_rig.config_document()
    for changes in ({"host": "smtp.evil.test"}, {"port": "2525"}, {"security": "ssl"},
                    {"username": "x@evil.test"}, {"host": "smtp.evil.test", "security": "ssl", "port": ""}):
        response = admin.post("/relay/", data=_relay_form(token, **changes), headers={"Accept-Language": lang})
        assert response.status_code == 422, changes
        found = re.findall(r'id="err-password"[^>]*>(.*?)</div>', response.text, re.S)
        assert [html.unescape(f) for f in found] == [ASK[lang]], changes
        assert reuse_rig.config_document() == before
    # Switching the relay on for the same server keeps the stored password.
    assert admin.post("/relay/", data=_relay_form(token)).status_code == 302
    relay = reuse_rig.config_document()["relay"]
    assert relay["enabled"] is True and relay["password"] == STORED_RELAY
    assert admin.post("/relay/", data=_relay_form(token, host="smtp.ionos.de", password=NEW)).status_code == 302
    relay = reuse_rig.config_document()["relay"]
    assert relay["host"] == "smtp.ionos.de" and relay["password"] == NEW
    _no_secrets(admin)


def _sender_form(token: str, **changes: Any) -> Dict[str, str]:
    form = {"csrf_token": token, "sender": "@zweit.de", "host": "smtp.strato.de", "port": "465", "security": "ssl",
            "username": "z@zweit.de", "password": ""}
    form.update(changes)
    return form


@pytest.mark.parametrize("lang", ["en", "de"])
def test_sender_relay_keeps_its_password_only_for_the_same_server(reuse_rig: Rig, lang: str) -> None:
    admin = Browserless(reuse_rig, "admin")
    token = admin.csrf()
    before = reuse_rig.config_document()
    for changes in ({"host": "smtp.evil.test"}, {"port": "587"}, {"security": "starttls"}, {"username": "x"}):
        response = admin.post("/relay/senders", data=_sender_form(token, **changes), headers={"Accept-Language": lang})
        assert response.status_code == 422, changes
        assert ASK[lang] in html.unescape(response.text), changes
        assert reuse_rig.config_document() == before
    response = admin.post("/relay/senders", data=_sender_form(token, username="z2@zweit.de", password=NEW))
    assert response.status_code == 302
    [entry] = reuse_rig.config_document()["relay"]["sender_relays"]
    assert entry["username"] == "z2@zweit.de" and entry["password"] == NEW
    # The same server and user again, password left empty: kept.
    assert admin.post("/relay/senders", data=_sender_form(token, username="z2@zweit.de")).status_code == 302
    assert reuse_rig.config_document()["relay"]["sender_relays"][0]["password"] == NEW
    _no_secrets(admin)
