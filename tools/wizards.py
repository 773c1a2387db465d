#!/usr/bin/env python3
"""Generate WIZARD_UIFILES/* (English and German) from one definition.

Run `python3 tools/wizards.py` after editing; tests/test_scripts.py fails when the
committed files differ from what this script produces, so both languages keep the same
keys and validators. Keys are the contract of docs/CONTRACTS.md ("Wizard keys").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

OUT = Path(__file__).resolve().parent.parent / "WIZARD_UIFILES"

T: Dict[str, Dict[str, str]] = {
    "fetch_title": {"enu": "Provider mailbox", "ger": "Postfach beim Provider"},
    "fetch_intro": {
        "enu": "SmartPop collects your company's mail from this mailbox at your provider (usually the "
               "catch-all mailbox) and delivers every message to the right MailPlus user. You can add "
               "more mailboxes later in the SmartPop app.",
        "ger": "SmartPop holt die Mails Ihrer Firma aus diesem Postfach beim Provider ab (meist das "
               "Sammelpostfach) und stellt jede Nachricht dem richtigen MailPlus-Benutzer zu. Weitere "
               "Postfächer können Sie später in der SmartPop-App anlegen.",
    },
    "protocol": {"enu": "Protocol", "ger": "Protokoll"},
    "host": {"enu": "Server", "ger": "Server"},
    "port": {"enu": "Port", "ger": "Port"},
    "security": {"enu": "Encryption", "ger": "Verschlüsselung"},
    "ssl": {"enu": "SSL/TLS (recommended)", "ger": "SSL/TLS (empfohlen)"},
    "starttls": {"enu": "STARTTLS", "ger": "STARTTLS"},
    "user": {"enu": "User name", "ger": "Benutzername"},
    "password": {"enu": "Password", "ger": "Passwort"},
    "host_err": {"enu": "Enter a server name such as pop.ionos.de", "ger": "Bitte einen Servernamen wie pop.ionos.de eingeben"},
    "port_err": {"enu": "Enter a port between 1 and 65535", "ger": "Bitte einen Port zwischen 1 und 65535 eingeben"},
    "required": {"enu": "This field is required", "ger": "Dieses Feld ist erforderlich"},
    "nolinebreak": {"enu": "No line breaks or control characters", "ger": "Keine Zeilenumbrüche oder Steuerzeichen"},
    "routing_title": {"enu": "Local delivery", "ger": "Zustellung"},
    "routing_intro": {
        "enu": "Mail for these domains is delivered to the MailPlus users of the same address. Mail "
               "that cannot be assigned to a user goes to the fallback mailbox, so nothing is lost.",
        "ger": "Mails an diese Domains werden den MailPlus-Benutzern mit gleicher Adresse zugestellt. "
               "Mails, die keinem Benutzer zugeordnet werden können, gehen an das Auffangpostfach - "
               "es geht nichts verloren.",
    },
    "domains": {"enu": "Your mail domains (comma-separated)", "ger": "Ihre Mail-Domains (durch Komma getrennt)"},
    "domains_err": {"enu": "Enter domains such as firma.de, firma.com", "ger": "Bitte Domains wie firma.de, firma.com eingeben"},
    "fallback": {"enu": "Fallback mailbox", "ger": "Auffangpostfach"},
    "address_err": {"enu": "Enter a mail address such as postmaster@firma.de", "ger": "Bitte eine Adresse wie postmaster@firma.de eingeben"},
    "relay_title": {"enu": "Outgoing mail (optional)", "ger": "Ausgehende Mails (optional)"},
    "relay_intro": {
        "enu": "Behind a dynamic IP, outgoing mail should leave through your provider's SMTP server. "
               "SmartPop prepares MailPlus for that; you activate it once with a DSM Task Scheduler task "
               "that the SmartPop app shows you. Leave this off to keep MailPlus's current setting.",
        "ger": "Hinter einer dynamischen IP sollten ausgehende Mails über den SMTP-Server Ihres Providers "
               "gehen. SmartPop bereitet MailPlus dafür vor; aktiviert wird es einmalig mit einer Aufgabe "
               "in der DSM-Aufgabenplanung, die Ihnen die SmartPop-App anzeigt. Lassen Sie es aus, bleibt "
               "MailPlus unverändert.",
    },
    "relay_enable": {"enu": "Send outgoing mail through the provider", "ger": "Ausgehende Mails über den Provider senden"},
    "relay_host": {"enu": "SMTP server", "ger": "SMTP-Server"},
    "relay_host_err": {"enu": "Enter a server name such as smtp.ionos.de", "ger": "Bitte einen Servernamen wie smtp.ionos.de eingeben"},
    "web_title": {"enu": "SmartPop app", "ger": "SmartPop-App"},
    "web_intro": {
        "enu": "The SmartPop app opens from the DSM main menu for administrators; its service talks to DSM "
               "over a private channel on this NAS and opens no network port. The port below is used only "
               "by SmartPop's development mode (on 127.0.0.1); keep the default.",
        "ger": "Die SmartPop-App öffnen Administratoren über das DSM-Hauptmenü; ihr Dienst spricht über "
               "einen privaten Kanal auf diesem NAS mit DSM und öffnet keinen Netzwerk-Port. Der folgende "
               "Port dient nur dem Entwicklungsmodus von SmartPop (auf 127.0.0.1); behalten Sie den Standard.",
    },
    "web_port": {"enu": "Internal port", "ger": "Interner Port"},
    "web_port_err": {"enu": "Enter a port between 1025 and 65535", "ger": "Bitte einen Port zwischen 1025 und 65535 eingeben"},
    "un_title": {"enu": "Uninstall SmartPop", "ger": "SmartPop deinstallieren"},
    "un_intro": {"enu": "Keep or delete SmartPop's settings and collection state.",
                 "ger": "Einstellungen und Abholstatus von SmartPop behalten oder löschen."},
    "keep": {"enu": "Keep settings and state for a later re-installation (recommended: mail that was "
                    "already collected is then not collected again)",
             "ger": "Einstellungen und Status für eine spätere Neuinstallation behalten (empfohlen: bereits "
                    "abgeholte Mails werden dann nicht erneut abgeholt)"},
    "delete": {"enu": "Delete all SmartPop data, including the stored passwords (cannot be undone)",
               "ger": "Alle SmartPop-Daten löschen, auch die gespeicherten Passwörter (nicht rückgängig zu machen)"},
    "relay_restore_intro": {
        "enu": "If SmartPop changed MailPlus's outgoing mail settings, it can restore them exactly as "
               "they were. This needs your SmartPop task in DSM Task Scheduler (it runs as root): when "
               "the settings are still active, the uninstallation stops and asks you to run that task "
               "once (Task Scheduler > select the task > Run), then to uninstall again.",
        "ger": "Falls SmartPop die Einstellungen von MailPlus für ausgehende Mails geändert hat, kann es "
               "sie exakt wiederherstellen. Dazu dient Ihre SmartPop-Aufgabe in der DSM-Aufgabenplanung "
               "(sie läuft als root): Sind die Einstellungen noch aktiv, hält die Deinstallation an und "
               "bittet Sie, diese Aufgabe einmal auszuführen (Aufgabenplanung > Aufgabe wählen > "
               "Ausführen) und dann erneut zu deinstallieren.",
    },
    "relay_restore": {"enu": "Restore MailPlus's original relay settings",
                      "ger": "Ursprüngliche Relay-Einstellungen von MailPlus wiederherstellen"},
    "un_task": {
        "enu": "After the uninstallation, delete SmartPop's task in DSM Task Scheduler (Control Panel > "
               "Task Scheduler): without the package it can do nothing and fails at every run.",
        "ger": "Löschen Sie nach der Deinstallation die SmartPop-Aufgabe in der DSM-Aufgabenplanung "
               "(Systemsteuerung > Aufgabenplanung): Ohne das Paket kann sie nichts tun und schlägt bei jedem "
               "Lauf fehl.",
    },
    "up_title": {"enu": "Upgrade SmartPop", "ger": "SmartPop aktualisieren"},
    "up_intro": {
        "enu": "Your settings, accounts and collection state are kept. If the configuration format "
               "changed, SmartPop converts it and keeps the old file as config.json.pre-migration. "
               "Collection pauses during the upgrade; mail waits safely at the provider.",
        "ger": "Ihre Einstellungen, Konten und der Abholstatus bleiben erhalten. Hat sich das Format der "
               "Konfiguration geändert, wandelt SmartPop sie um und behält die alte Datei als "
               "config.json.pre-migration. Während der Aktualisierung ruht die Abholung; die Mails "
               "warten sicher beim Provider.",
    },
    "up_task": {
        "enu": "If you use the outgoing relay: every version brings a new command for the SmartPop task "
               "in DSM Task Scheduler (it checks the code it runs as root). After the upgrade, open "
               "SmartPop > Relay and paste the command shown there into the task; until then the old "
               "task refuses to run.",
        "ger": "Falls Sie das Relay für ausgehende Mails nutzen: Jede Version bringt einen neuen Befehl für "
               "die SmartPop-Aufgabe in der DSM-Aufgabenplanung (er prüft den Code, den er als root "
               "ausführt). Öffnen Sie nach der Aktualisierung SmartPop > Relay und fügen Sie den dort "
               "gezeigten Befehl in die Aufgabe ein; bis dahin verweigert die alte Aufgabe den Lauf.",
    },
}

HOST_RE = r"/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/"
PORT_FN = "{ var p = parseInt(arguments[0], 10); return (String(p) === String(arguments[0]).trim() && p >= %d && p <= 65535) ? true : '%s'; }"
ADDRESS_RE = r"/^[A-Za-z0-9!#$%&'*+\/=?^_`{|}~.-]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z]{2,}$/"
DOMAINS_RE = r"/^\s*[A-Za-z0-9.-]+\.[A-Za-z]{2,}(\s*,\s*[A-Za-z0-9.-]+\.[A-Za-z]{2,})*\s*$/"
SINGLE_LINE_FN = "{ return /[\\u0000-\\u001f\\u007f]/.test(arguments[0]) ? '%s' : true; }"


def combobox(key: str, label: str, default: str, options: List[List[str]]) -> Dict[str, Any]:
    """A drop-down whose value ends up in env var `key`."""
    return {"type": "combobox", "subitems": [{
        "key": key, "desc": label, "defaultValue": default, "editable": False, "mode": "local",
        "autoSelect": True, "forceSelection": True, "displayField": "display", "valueField": "value",
        "store": {"xtype": "arraystore", "fields": ["display", "value"], "data": options}}]}


def text(key: str, label: str, lang: str, default: str = "", regex: str = "", err: str = "",
         required: bool = True, fn: str = "", password: bool = False, empty: str = "") -> Dict[str, Any]:
    """A text or password field with validators."""
    validator: Dict[str, Any] = {"allowBlank": not required}
    if regex:
        validator["regex"] = {"expr": regex, "errorText": T[err][lang]}
    validator["fn"] = fn or SINGLE_LINE_FN % T["nolinebreak"][lang]
    sub: Dict[str, Any] = {"key": key, "desc": label, "defaultValue": default, "validator": validator}
    if required:
        sub["blankText"] = T["required"][lang]
    if empty:
        sub["emptyText"] = empty
    return {"type": "password" if password else "textfield", "subitems": [sub]}


def install(lang: str) -> List[Dict[str, Any]]:
    """The install wizard: provider mailbox, local delivery, relay, app port."""
    sec = [[T["ssl"][lang], "ssl"], [T["starttls"][lang], "starttls"]]
    return [
        {"step_title": T["fetch_title"][lang], "invalid_next_disabled_v2": True, "items": [
            {"desc": T["fetch_intro"][lang]},
            combobox("wizard_fetch_protocol", T["protocol"][lang], "pop3", [["POP3", "pop3"], ["IMAP", "imap"]]),
            text("wizard_fetch_host", T["host"][lang], lang, regex=HOST_RE, err="host_err", empty="pop.ionos.de"),
            combobox("wizard_fetch_security", T["security"][lang], "ssl", sec),
            text("wizard_fetch_port", T["port"][lang], lang, default="995",
                 fn=PORT_FN % (1, T["port_err"][lang])),
            text("wizard_fetch_user", T["user"][lang], lang, empty="sammel@firma.de"),
            text("wizard_fetch_password", T["password"][lang], lang, password=True),
        ]},
        {"step_title": T["routing_title"][lang], "invalid_next_disabled_v2": True, "items": [
            {"desc": T["routing_intro"][lang]},
            text("wizard_local_domains", T["domains"][lang], lang, regex=DOMAINS_RE, err="domains_err",
                 empty="firma.de"),
            text("wizard_fallback_recipient", T["fallback"][lang], lang, regex=ADDRESS_RE, err="address_err",
                 empty="postmaster@firma.de"),
        ]},
        {"step_title": T["relay_title"][lang], "invalid_next_disabled_v2": True, "items": [
            {"desc": T["relay_intro"][lang]},
            {"type": "multiselect", "subitems": [
                {"key": "wizard_relay_enable", "desc": T["relay_enable"][lang], "defaultValue": False}]},
            text("wizard_relay_host", T["relay_host"][lang], lang, regex=HOST_RE, err="relay_host_err",
                 required=False, empty="smtp.ionos.de"),
            combobox("wizard_relay_security", T["security"][lang], "starttls",
                     [[T["starttls"][lang] + " (587)", "starttls"], ["SSL/TLS (465)", "ssl"]]),
            text("wizard_relay_port", T["port"][lang], lang, default="587", fn=PORT_FN % (1, T["port_err"][lang])),
            text("wizard_relay_user", T["user"][lang], lang, required=False),
            text("wizard_relay_password", T["password"][lang], lang, required=False, password=True),
        ]},
        {"step_title": T["web_title"][lang], "invalid_next_disabled_v2": True, "items": [
            {"desc": T["web_intro"][lang]},
            text("wizard_web_port", T["web_port"][lang], lang, default="8765",
                 fn=PORT_FN % (1025, T["web_port_err"][lang])),
        ]},
    ]


def uninstall(lang: str) -> List[Dict[str, Any]]:
    """The uninstall wizard: keep (default) or delete data; restore MailPlus relay settings."""
    return [{"step_title": T["un_title"][lang], "items": [
        {"type": "singleselect", "desc": T["un_intro"][lang], "subitems": [
            {"key": "wizard_keep_data", "desc": T["keep"][lang], "defaultValue": True},
            {"key": "wizard_delete_data", "desc": T["delete"][lang], "defaultValue": False}]},
        {"type": "multiselect", "desc": T["relay_restore_intro"][lang], "subitems": [
            {"key": "wizard_relay_restore", "desc": T["relay_restore"][lang], "defaultValue": True}]},
        {"desc": T["un_task"][lang]},
    ]}]


def upgrade(lang: str) -> List[Dict[str, Any]]:
    """The upgrade wizard: tells the admin what is kept."""
    return [{"step_title": T["up_title"][lang], "items": [{"desc": T["up_intro"][lang]},
                                                          {"desc": T["up_task"][lang]}]}]


def render() -> Dict[str, str]:
    """Return file name -> JSON text for every wizard file."""
    files = {}
    for kind, build in (("install", install), ("uninstall", uninstall), ("upgrade", upgrade)):
        for lang, suffix in (("enu", ""), ("ger", "_ger")):
            files[f"{kind}_uifile{suffix}"] = json.dumps(build(lang), indent=2, ensure_ascii=False) + "\n"
    return files


def main() -> int:
    """Write the wizard files."""
    OUT.mkdir(exist_ok=True)
    for name, content in render().items():
        (OUT / name).write_text(content, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
