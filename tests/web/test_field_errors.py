"""Field messages in the page's language: every validator problem type, in German and English, with
no English problem or fix text on a German page, no secret echoed, and a catalog entry for every
message id the code uses (so a new validator without translation fails here)."""

from __future__ import annotations

import ast
import html
import json
import re
import string
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Set, Tuple

import pytest
from webrig import Browserless, Rig

from smartpop.config import grants, store
from smartpop.config import validators as v
from smartpop.config.schema import parse_config
from smartpop.errors import ConfigError
from smartpop.paths import Paths, ensure_data_dir
from smartpop.web import i18n
from smartpop.web.forms import FormError, errors_of, field_message, form_message, parse_aliases
from support.samples import sample_document

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "package" / "smartpop"
CATALOGS = {lang: json.loads((PACKAGE / "web" / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
            for lang in ("de", "en")}
# File-level errors (missing file, broken JSON, old schema) are shown as the English detail on purpose:
# they carry a path or a JSON position, and the admin fixes them outside the UI.
UNCODED_FILES = {"config/migrate.py", "config/store.py"}
# The two wrappers every message may be put into, besides the "validation.<code>" texts.
WRAPPERS = {"validation.setting", "validation.untranslated"}
SECRET = "Geheim-Pa55wort!"
WEBHOOK_SECRET = "ftp://hooks.example/Chat-T0ken-xyz"

ACCOUNT = {"name": "anna", "protocol": "imap", "security": "ssl", "host": "imap.firma.de", "port": "",
           "username": "anna@firma.de", "password": SECRET, "mode": "multidrop", "enabled": "on", "interval": "60",
           "folder": "INBOX"}
ROUTING = {"local_domains": "firma.de", "aliases": "info@firma.de: anna@firma.de",
           "fallback_recipient": "postmaster@firma.de"}
RELAY = {"enabled": "on", "host": "smtp.ionos.de", "port": "465", "security": "ssl", "username": "relay@firma.de",
         "password": ""}
SENDER = {"sender": "@zweit.de", "host": "smtp.strato.de", "port": "465", "security": "ssl",
          "username": "z@zweit.de", "password": SECRET}
ALERTS = {"failing_minutes": "30", "repeat_minutes": "60", "email_to": "", "dsm_notify": "on", "webhook_url": ""}
FORMS = {"/accounts/new": ACCOUNT, "/routing/": ROUTING, "/relay/": RELAY, "/relay/senders": SENDER,
         "/alerts/": ALERTS}


class PageCase(NamedTuple):
    """An invalid form: where it goes, what differs from a valid one, and what the field then says."""

    code: str
    path: str
    changes: Dict[str, str]
    field: str
    german: str
    english: str
    english_problem: str  # a piece of str(exc): the CLI's English problem/fix text


PAGE_CASES = [
    PageCase("not_in_range", "/accounts/new", {"port": "70000"}, "port",
             "Bitte eine ganze Zahl von 1 bis 65535 eingeben.", "Enter a whole number from 1 to 65535.",
             "must be a whole number from 1 to 65535"),
    PageCase("not_in_range", "/alerts/", {"failing_minutes": "2"}, "failing_minutes",
             "Bitte eine ganze Zahl von 5 bis 10080 eingeben.", "Enter a whole number from 5 to 10080.",
             "set alerts.failing_minutes to a number between"),
    PageCase("not_a_choice", "/accounts/new", {"protocol": "smtp"}, "protocol",
             "„smtp“ steht nicht zur Auswahl. Bitte einen dieser Werte wählen: pop3, imap.",
             "“smtp” is not one of the choices. Choose one of: pop3, imap.", "must be one of pop3, imap"),
    PageCase("control_characters", "/accounts/new", {"username": "anna\nx"}, "username",
             "Zeilenumbrüche und Steuerzeichen sind hier nicht erlaubt. Bitte entfernen.",
             "Line breaks and control characters are not allowed here. Remove them.",
             "contains a line break or control character"),
    PageCase("too_long", "/accounts/new", {"username": "a" * 321}, "username",
             "Der Text ist länger als 320 Zeichen. Bitte kürzen.", "This is longer than 320 characters. Shorten it.",
             "is longer than 320 characters"),
    PageCase("too_long", "/accounts/new", {"password": SECRET * 40}, "password",
             "Der Text ist länger als 512 Zeichen. Bitte kürzen.", "This is longer than 512 characters. Shorten it.",
             "is longer than 512 characters"),
    PageCase("secret_control_characters", "/accounts/new", {"password": SECRET + "\n"}, "password",
             "Der Wert enthält einen Zeilenumbruch oder ein Steuerzeichen. Bitte ohne Zeilenumbrüche erneut eingeben.",
             "This contains a line break or control character. Enter it again without line breaks.",
             "enter accounts[1].password again without line breaks"),
    PageCase("not_a_host", "/accounts/new", {"host": "not a host"}, "host",
             "„not a host“ ist kein gültiger Servername. Bitte einen Namen wie mail.example.com oder eine "
             "IP-Adresse eingeben.",
             "“not a host” is not a valid host name. Enter a name like mail.example.com or an IP address.",
             "is not a valid host name"),
    PageCase("not_a_domain", "/routing/", {"local_domains": "localhost"}, "local_domains",
             "„localhost“ ist keine Mail-Domain. Bitte eine Domain wie firma.de eingeben.",
             "“localhost” is not a mail domain. Enter a domain like firma.de.", "is not a mail domain"),
    PageCase("not_an_address", "/routing/", {"fallback_recipient": "kein-at"}, "fallback_recipient",
             "„kein-at“ ist keine gültige E-Mail-Adresse. Bitte eine Adresse wie anna@firma.de eingeben.",
             "“kein-at” is not a mail address. Enter an address like anna@firma.de.", "is not a mail address"),
    PageCase("not_an_address", "/relay/senders", {"sender": "kaputt"}, "sender",
             "„kaputt“ ist keine gültige E-Mail-Adresse. Bitte eine Adresse wie anna@firma.de eingeben.",
             "“kaputt” is not a mail address. Enter an address like anna@firma.de.", "set relay.sender_relays"),
    PageCase("not_a_name", "/accounts/new", {"name": "Bad Name"}, "name",
             "„Bad Name“ ist kein gültiger Name. Erlaubt sind Kleinbuchstaben, Ziffern, „.“, „_“ und „-“ "
             "(höchstens 64 Zeichen), am Anfang ein Buchstabe oder eine Ziffer.",
             "“Bad Name” is not a valid name. Use lower-case letters, digits, “.”, “_” or “-” (at most 64), "
             "starting with a letter or digit.", "use lower-case letters, digits, '.'"),
    PageCase("not_an_absolute_path", "/accounts/new", {"ca_file": "certs/ca.pem"}, "ca_file",
             "„certs/ca.pem“ ist kein absoluter Pfad. Bitte den vollständigen Pfad angeben, beginnend mit /.",
             "“certs/ca.pem” is not an absolute path. Enter the full path, starting with /.",
             "is not an absolute path"),
    PageCase("missing", "/accounts/new", {"host": ""}, "host", "Diese Angabe fehlt. Bitte ausfüllen.",
             "This is required. Fill it in.", "is missing. Fix: add accounts[1].host"),
    PageCase("insecure_needs_consent", "/accounts/new", {"security": "none"}, "security",
             "Ohne Verschlüsselung wird das Passwort im Klartext übertragen. Bitte SSL/TLS oder STARTTLS wählen "
             "oder „Unverschlüsselte Verbindung erlauben“ ankreuzen, wenn Sie das in Kauf nehmen.",
             "Without encryption the password travels in clear text. Choose SSL/TLS or STARTTLS, or tick "
             "“Allow an unencrypted connection” if you accept that.", "sends the password unencrypted"),
    PageCase("deliver_to_required", "/accounts/new", {"mode": "single"}, "deliver_to",
             "Für ein Einzelpostfach bitte das lokale Zielpostfach angeben, z. B. anna@firma.de.",
             "A single mailbox needs the local mailbox to deliver to, e.g. anna@firma.de.",
             "is required when mode is 'single'"),
    PageCase("idle_needs_imap", "/accounts/new", {"protocol": "pop3", "idle": "on"}, "idle",
             "IDLE-Push funktioniert nur mit IMAP. Bitte IDLE ausschalten oder IMAP wählen.",
             "IDLE push works only with IMAP. Switch IDLE off or choose IMAP.", "idle to false or use imap"),
    PageCase("relay_host_required", "/relay/", {"host": ""}, "host",
             "Das Relay ist eingeschaltet und braucht den SMTP-Server des Providers. Bitte eintragen oder das "
             "Relay ausschalten.",
             "The relay is switched on, so it needs the provider's SMTP server. Enter it, or switch the relay off.",
             "is required when the relay is enabled"),
    PageCase("not_a_web_url", "/alerts/", {"webhook_url": WEBHOOK_SECRET}, "webhook_url",
             "Das ist keine http(s)-URL. Bitte eine URL eingeben, die mit https:// beginnt, oder das Feld leer lassen.",
             "This is not an http(s) URL. Enter a URL starting with https://, or leave the field empty.",
             "is not an http(s) URL"),
    PageCase("name_taken", "/accounts/new", {"name": "sammelpostfach"}, "name",
             "Der Name „sammelpostfach“ ist schon vergeben. Bitte einen anderen Namen wählen.",
             "The name “sammelpostfach” is used already. Choose another name.", "choose another name"),
    PageCase("local_domains_needed", "/routing/", {"local_domains": ""}, "local_domains",
             "Ein Sammelpostfach braucht die eigenen Mail-Domains der Firma. Bitte eintragen, z. B. firma.de.",
             "A catch-all account needs the company's mail domains. Enter them, e.g. firma.de.",
             "is empty but a multidrop account needs it"),
    PageCase("fallback_needed", "/routing/", {"fallback_recipient": ""}, "fallback_recipient",
             "Ein Sammelpostfach braucht eine Sammeladresse (Fallback). Bitte ein lokales Postfach wie "
             "postmaster@firma.de angeben.",
             "A catch-all account needs a fallback recipient. Enter a local mailbox such as postmaster@firma.de.",
             "is missing but a multidrop account needs it"),
    PageCase("password_missing", "/accounts/new", {"password": ""}, "password", "Bitte das Passwort eingeben.",
             "Enter the password.", "enter the mailbox password"),
    PageCase("password_missing", "/relay/senders", {"password": ""}, "password", "Bitte das Passwort eingeben.",
             "Enter the password.", "enter the SMTP password"),
    # RELAY leaves the password empty but names another server than the stored relay (issue 11).
    PageCase("password_for_new_server", "/relay/", {}, "password",
             "Die Verbindungsdaten wurden geändert (Protokoll, Server, Port, Verschlüsselung oder Benutzername), "
             "daher wird das gespeicherte Passwort nicht verwendet. Bitte das Passwort eingeben.",
             "The connection settings changed (protocol, server, port, encryption or user name), so the stored "
             "password is not used. Enter the password.", "the stored password is not used"),
    PageCase("not_a_client_id", "/accounts/new", {"auth": "oauth2", "provider": "microsoft", "client_id": "a b"},
             "client_id", "Das ist keine Client-ID (keine Leerzeichen oder Sonderzeichen). Bitte die Anwendungs-ID "
             "(Client) erneut kopieren.", "This is not a client ID (no spaces or special characters). Copy the "
             "application (client) ID again.", "is not a client id"),
    PageCase("not_a_tenant", "/accounts/new", {"auth": "oauth2", "provider": "microsoft", "client_id": "abc-123",
                                               "tenant": "evil/path"}, "tenant",
             "„evil/path“ ist kein Mandant. Bitte common, organizations, consumers, eine Mandanten-ID oder eine "
             "Domain angeben.", "“evil/path” is not a tenant. Use common, organizations, consumers, a tenant ID or "
             "a domain.", "is not a tenant"),
    PageCase("client_secret_required", "/accounts/new", {"auth": "oauth2", "provider": "google",
                                                         "client_id": "abc-123"}, "client_secret",
             "Google braucht den Clientschlüssel Ihres Desktop-App-Clients.",
             "Google needs the client secret of your desktop app client.", "is required for Google"),
    PageCase("alias_line", "/routing/", {"aliases": "info@firma.de: anna@firma.de\nkaputt"}, "aliases",
             "Zeile 2 hat nicht die Form „alias@domain: ziel@domain, …“. Bitte pro Zeile einen Alias, einen "
             "Doppelpunkt und dann die Zieladressen schreiben.",
             "Line 2 is not “alias@domain: target@domain, …”. Write one alias per line, a colon, then the "
             "target addresses.", "write one alias per line"),
]


def _raises(call: Callable[[], Any]) -> Exception:
    with pytest.raises((ConfigError, FormError)) as info:
        call()
    return info.value


def _doc(**changes: Any) -> Dict[str, Any]:
    document = sample_document()
    document.update(changes)
    return document


def _grant_for_a_password_account() -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = Paths(Path(folder) / "data")
        ensure_data_dir(paths)
        store.save_document(paths, sample_document())
        grants.save_refresh_token(paths, "sammelpostfach", "rt-for-a-password-account")


class UnitCase(NamedTuple):
    """A problem no form can produce (the UI sends well-formed values), checked through the validators."""

    code: str
    raise_it: Callable[[], Any]
    german: str
    english: str


UNIT_CASES = [
    UnitCase("not_a_bool", lambda: v.as_bool("web.x", "ja"), "Bitte Ja oder Nein wählen.", "Choose yes or no."),
    UnitCase("not_text", lambda: v.as_text("folder", 5), "Bitte hier einen Text eingeben.", "Enter text here."),
    UnitCase("empty", lambda: v.as_text("folder", ""), "Bitte dieses Feld ausfüllen.",
             "This field is empty. Fill it in."),
    UnitCase("secret_not_text", lambda: v.as_secret_text("password", 5),
             "Der Wert muss Text sein. Bitte erneut eingeben.", "This value must be text. Enter it again."),
    UnitCase("no_such_account", lambda: parse_config(sample_document()).account("otto"),
             "Es gibt kein Konto namens „otto“.", "There is no account named “otto”."),
    UnitCase("not_an_object", lambda: parse_config(_doc(delivery=[])), "Hier wird ein JSON-Objekt erwartet.",
             "This must be a JSON object."),
    UnitCase("unknown_setting", lambda: parse_config(_doc(web={"port": 8765, "bind": "0.0.0.0"})),
             "Diese Einstellung ist unbekannt. Bitte entfernen (bekannt sind hier: port).",
             "This setting is not known. Remove it (known here: port)."),
    UnitCase("not_a_list", lambda: parse_config(_doc(local_domains="firma.de")), "Hier wird eine Liste erwartet.",
             "This must be a list."),
    UnitCase("sender_twice", lambda: parse_config(_doc(relay=dict(sample_document()["relay"], sender_relays=[
        {"sender": "@zweit.de", "host": "smtp.strato.de", "username": "z", "password": "x"},
        {"sender": "@Zweit.de", "host": "smtp.strato.de", "username": "z", "password": "x"}]))),
             "@zweit.de ist doppelt eingetragen. Bitte nur einen Eintrag pro Absender anlegen.",
             "@zweit.de is listed twice. Keep one entry per sender."),
    UnitCase("aliases_not_an_object", lambda: parse_config(_doc(aliases=["info@firma.de"])),
             "Die Aliase müssen jeder Adresse eine Liste von Zieladressen zuordnen.",
             "The aliases must map each address to a list of addresses."),
    UnitCase("alias_without_targets", lambda: parse_config(_doc(aliases={"Info@firma.de": []})),
             "Der Alias info@firma.de hat keine Zieladresse. Bitte mindestens eine angeben.",
             "The alias info@firma.de has no target address. Add at least one."),
    UnitCase("unknown_schema_version", lambda: parse_config(_doc(schema_version=7)),
             "Die Schema-Version 7 wird nicht unterstützt; diese SmartPop-Version versteht 1. Bitte SmartPop "
             "aktualisieren oder eine Konfiguration dieser Version wiederherstellen.",
             "Schema version 7 is not supported; this SmartPop understands 1. Upgrade SmartPop, or restore a "
             "config written by this version."),
    UnitCase("name_taken", lambda: parse_config(_doc(accounts=sample_document()["accounts"] * 2)),
             "Der Name „sammelpostfach“ ist schon vergeben. Bitte einen anderen Namen wählen.",
             "The name “sammelpostfach” is used already. Choose another name."),
    UnitCase("oauth_required", lambda: parse_config(_doc(accounts=[dict(sample_document()["accounts"][0],
                                                                        auth="oauth2")])),
             "Bitte den OAuth2-Anbieter wählen und die Client-ID Ihrer App-Registrierung eingeben.",
             "Choose the OAuth2 provider and enter the client ID of your app registration."),
    UnitCase("oauth_without_oauth2", lambda: parse_config(_doc(accounts=[dict(
        sample_document()["accounts"][0], oauth={"provider": "microsoft", "client_id": "abc-123"})])),
             "OAuth2-Einstellungen gelten nur mit dem Anmeldeverfahren OAuth2.",
             "OAuth2 settings are only used with the sign-in method OAuth2."),
    UnitCase("not_oauth2", lambda: _grant_for_a_password_account(),
             "Dieses Konto meldet sich nicht mit OAuth2 an.", "This account does not sign in with OAuth2."),
    UnitCase("alias_line", lambda: parse_aliases("nur-text"),
             "Zeile 1 hat nicht die Form „alias@domain: ziel@domain, …“. Bitte pro Zeile einen Alias, einen "
             "Doppelpunkt und dann die Zieladressen schreiben.",
             "Line 1 is not “alias@domain: target@domain, …”. Write one alias per line, a colon, then the "
             "target addresses."),
]


def _used_codes() -> Tuple[Dict[str, Set[str]], List[str]]:
    """Every message id raised through fail() or FormError in config/ and web/, with the parameters given."""
    codes: Dict[str, Set[str]] = {}
    uncoded: List[str] = []
    for folder in ("config", "web"):
        for module in sorted((PACKAGE / folder).rglob("*.py")):
            where = module.relative_to(PACKAGE).as_posix()
            for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name not in ("fail", "FormError"):
                    continue
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                code = keywords.pop("code", None)
                if code is None:
                    if where not in UNCODED_FILES:
                        uncoded.append(f"{where}:{node.lineno}")
                    continue
                assert isinstance(code, ast.Constant) and isinstance(code.value, str), f"{where}:{node.lineno}"
                params = set(keywords)
                # Every call site of one id must give every parameter its texts use: keep the smallest set.
                codes[code.value] = codes[code.value] & params if code.value in codes else params
    return codes, uncoded


def _placeholders(text: str) -> Set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_id_has_a_german_and_an_english_text() -> None:
    codes, uncoded = _used_codes()
    assert uncoded == [], "raise fail(..., code='...') or FormError(..., code='...') and add the texts"
    assert len(codes) >= 30
    for lang, catalog in CATALOGS.items():
        for code, params in codes.items():
            text = catalog.get("validation." + code)
            assert text and text.strip(), (lang, code)
            assert _placeholders(text) <= params, (lang, code, _placeholders(text) - params)
        stale = {k for k in catalog if k.startswith("validation.")} - {"validation." + c for c in codes} - WRAPPERS
        assert stale == set(), (lang, stale)
    for code in codes:
        assert CATALOGS["de"]["validation." + code] != CATALOGS["en"]["validation." + code], code


def test_every_message_id_is_tested_here() -> None:
    codes, _ = _used_codes()
    tested = {case.code for case in PAGE_CASES} | {case.code for case in UNIT_CASES}
    assert set(codes) - tested == set()


def test_german_texts_are_german() -> None:
    texts = [CATALOGS["de"]["validation." + c] for c in _used_codes()[0]]
    assert all(not re.search(r"\b(the|must|is|Enter|Fix)\b", t) for t in texts), texts
    assert any("ü" in t for t in texts) and any("„" in t for t in texts)


@pytest.mark.parametrize("case", UNIT_CASES, ids=[c.code for c in UNIT_CASES])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_problem_without_a_form_in_both_languages(case: UnitCase, lang: str) -> None:
    exc = _raises(case.raise_it)
    assert getattr(exc, "code") == case.code
    shown = field_message(exc, lang)
    assert shown == (case.german if lang == "de" else case.english)
    if lang == "de":
        assert "Fix:" not in shown and str(exc) not in shown


def test_str_of_the_error_stays_the_english_cli_text() -> None:
    exc = _raises(lambda: v.as_port("delivery.port", "70000"))
    assert str(exc) == ("delivery.port: must be a whole number from 1 to 65535, got 70000. "
                        "Fix: set delivery.port to a number between 1 and 65535")
    assert isinstance(exc, ConfigError) and exc.key == "delivery.port"
    assert exc.code == "not_in_range" and exc.params == {"low": 1, "high": 65535, "value": "70000"}
    # Positional calls without an id (as the relay's own checks make them) keep working.
    plain = v.fail("relay.x", "is empty", "enter relay.x")
    assert str(plain) == "relay.x: is empty. Fix: enter relay.x" and plain.code == "" and plain.params == {}


def test_form_level_sentence_names_the_setting_and_uncoded_errors_stay_readable() -> None:
    exc = _raises(lambda: v.as_port("accounts[1].port", "0"))
    assert form_message(exc, "de") == ("Die Einstellung „accounts[1].port“ ist ungültig: "
                                       "Bitte eine ganze Zahl von 1 bis 65535 eingeben.")
    assert form_message(exc, "en") == ("The setting “accounts[1].port” is not valid: "
                                       "Enter a whole number from 1 to 65535.")
    # A form's page names the setting by the label it shows, never by its key in config.json (issue 13 §6).
    assert errors_of(exc, "de", ["host"]) == {"_form": "Die Einstellung „Port“ ist ungültig: "
                                                       "Bitte eine ganze Zahl von 1 bis 65535 eingeben."}
    assert form_message(exc, "en", human=True) == ("The setting “Port” is not valid: "
                                                   "Enter a whole number from 1 to 65535.")
    assert errors_of(exc, "de", ["port"]) == {"port": "Bitte eine ganze Zahl von 1 bis 65535 eingeben."}
    alias = _raises(lambda: v.as_address("aliases['info@firma.de'][0]", "x"))
    assert list(errors_of(alias, "en", ["aliases"])) == ["aliases"]
    relay_own = ConfigError("relay.sasl: is empty. Fix: enter relay.sasl", key="relay.sasl")
    assert field_message(relay_own, "de") == "Technische Meldung (nur auf Englisch): " + str(relay_own)
    assert form_message(relay_own, "en") == str(relay_own)


@pytest.fixture(scope="module")
def shared() -> Iterator[Tuple[Rig, Browserless, str]]:
    """One rig for all form posts: none of them may change the config."""
    environment = Rig(sample_document())
    client = Browserless(environment, "admin")
    yield environment, client, client.csrf()
    environment.stop()


def _field_text(page: str, field: str) -> str:
    found = re.findall(r'<div class="field-error" id="err-' + re.escape(field) + r'"[^>]*>(.*?)</div>', page, re.S)
    assert len(found) == 1, (field, found)
    return html.unescape(found[0])


@pytest.mark.parametrize("case", PAGE_CASES,
                         ids=[f"{c.code}-{c.path.strip('/').replace('/', '-')}" for c in PAGE_CASES])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_field_message_in_the_page_language(shared: Tuple[Rig, Browserless, str], case: PageCase, lang: str) -> None:
    rig, client, token = shared
    before = rig.config_document()
    form = dict(FORMS[case.path], csrf_token=token, **case.changes)
    response = client.post(case.path, data=form, headers={"Accept-Language": lang})
    assert response.status_code == 422
    page = html.unescape(response.text)
    assert f'<html lang="{lang}">' in page
    shown = _field_text(response.text, case.field)
    assert shown == (case.german if lang == "de" else case.english)
    assert 'id="form-error"' not in page  # the message sits at its field, not at the page top
    if lang == "de":
        assert case.english not in page and case.english_problem not in page and "Fix:" not in page
    else:
        assert case.german not in page
    for secret in (SECRET, WEBHOOK_SECRET, "s3cret-Fetch!", "s3cret-Relay!"):
        assert secret not in response.text
    assert rig.config_document() == before


@pytest.mark.parametrize("lang", ["de", "en"])
def test_error_about_a_setting_the_form_lacks_goes_to_the_page_top(lang: str) -> None:
    document = sample_document()
    document["accounts"][0].update(mode="single", deliver_to="anna@firma.de")
    document.update(local_domains=[], fallback_recipient=None, aliases={})
    rig = Rig(document)
    try:
        client = Browserless(rig, "admin")
        form = dict(ACCOUNT, csrf_token=client.csrf())
        response = client.post("/accounts/new", data=form, headers={"Accept-Language": lang})
        assert response.status_code == 422
        banner = re.findall(r'id="form-error"[^>]*>(.*?)</div>', response.text, re.S)
        expected = {
            "de": "Die Einstellung „Lokale Domains“ ist ungültig: Ein Sammelpostfach braucht die eigenen "
                  "Mail-Domains der Firma. Bitte eintragen, z. B. firma.de.",
            "en": "The setting “Local domains” is not valid: A catch-all account needs the company's mail "
                  "domains. Enter them, e.g. firma.de.",
        }[lang]
        assert [html.unescape(b) for b in banner] == [expected]
        assert "local_domains“" not in html.unescape(response.text)  # the label, not the config key
        if lang == "de":
            assert "is empty but a multidrop account needs it" not in response.text
        assert SECRET not in response.text
    finally:
        rig.stop()


@pytest.mark.parametrize("lang", ["de", "en"])
def test_connection_test_answers_in_the_page_language(shared: Tuple[Rig, Browserless, str], lang: str) -> None:
    _rig, client, token = shared
    form = dict(ACCOUNT, csrf_token=token, port="0")
    response = client.post("/accounts/test", data=form, headers={"Accept-Language": lang})
    assert response.status_code == 422
    answer = response.json()
    field = {"de": "Bitte eine ganze Zahl von 1 bis 65535 eingeben.", "en": "Enter a whole number from 1 to 65535."}
    # Named by the field's label, never by its config key (accounts[1].port): issue 13 §6.
    setting = {"de": "Die Einstellung „Port“ ist ungültig: ",
               "en": "The setting “Port” is not valid: "}
    assert answer["message"] == setting[lang] + field[lang]
    assert "accounts[" not in response.text
    assert answer["fields"] == {"port": field[lang]}
    assert SECRET not in response.text
    response = client.post("/relay/test-mail", data={"csrf_token": token, "to": "kein-at"},
                           headers={"Accept-Language": lang})
    assert response.status_code == 422
    expected = i18n.translate(lang, "validation.not_an_address", value="kein-at")
    assert response.json() == {"ok": False, "message": expected, "fields": {"to": expected}}



MANY = [
    ("/accounts/new", dict(ACCOUNT, name="sammelpostfach", host="not a host", port="70000", username="anna\nx",
                           password="", mode="single", ca_file="certs/ca.pem"),
     {"name": "name_taken", "host": "not_a_host", "port": "not_in_range", "username": "control_characters",
      "password": "password_missing", "deliver_to": "deliver_to_required", "ca_file": "not_an_absolute_path"}),
    ("/accounts/sammelpostfach/edit", dict(ACCOUNT, host="kaputt host", port="0", security="none", password=""),
     {"host": "not_a_host", "port": "not_in_range", "security": "insecure_needs_consent",
      "password": "password_for_new_server"}),
    ("/relay/", dict(RELAY, host="kein host", port="99999", username="r\x01x", password=SECRET),
     {"host": "not_a_host", "port": "not_in_range", "username": "control_characters"}),
    ("/relay/senders", dict(SENDER, sender="kaputt", port="0", host="", password=""),
     {"sender": "not_an_address", "port": "not_in_range", "host": "missing", "password": "password_missing"}),
]


@pytest.mark.parametrize("path, form, expected", MANY, ids=[m[0].strip("/").replace("/", "-") for m in MANY])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_every_field_error_at_once(shared: Tuple[Rig, Browserless, str], path: str, form: Dict[str, str],
                                   expected: Dict[str, str], lang: str) -> None:
    rig, client, token = shared
    before = rig.config_document()
    response = client.post(path, data=dict(form, csrf_token=token), headers={"Accept-Language": lang})
    assert response.status_code == 422
    page = html.unescape(response.text)
    shown = dict(re.findall(r'<div class="field-error" id="err-([\w-]+)"[^>]*>(.*?)</div>', response.text, re.S))
    assert set(shown) == set(expected), shown
    for field, code in expected.items():
        text = html.unescape(shown[field])
        # The catalog text of that problem, in the page's language (its end follows the last placeholder).
        assert text.endswith(re.split(r"\{\w+\}", CATALOGS[lang]["validation." + code])[-1]), (field, text)
    assert 'id="form-error"' not in page
    assert not re.search(r"(accounts|relay|sender_relays)\[\d+\]|relay\.\w+", page.split("<main>", 1)[1]), \
        "no config keys on the page"
    if lang == "de":
        assert "Fix:" not in page and "must be" not in page
    assert SECRET not in response.text
    assert rig.config_document() == before
