"""Provider presets: the servers, ports and security of common German and global mail providers.

Values are the providers' published settings. `note` is a message key shown with the preset;
`oauth` names the OAuth2 provider whose sign-in the account form preselects (issue 18: these
providers refuse or discourage password logins).
"""

from __future__ import annotations

from typing import Any, Dict, List

# Each entry: incoming POP3 and IMAP (implicit TLS) and outgoing submission for the relay.
PRESETS: List[Dict[str, Any]] = [
    {"id": "ionos", "label": "IONOS",
     "pop3": ("pop.ionos.de", 995, "ssl"), "imap": ("imap.ionos.de", 993, "ssl"),
     "smtp": ("smtp.ionos.de", 587, "starttls"), "note": ""},
    {"id": "strato", "label": "Strato",
     "pop3": ("pop3.strato.de", 995, "ssl"), "imap": ("imap.strato.de", 993, "ssl"),
     "smtp": ("smtp.strato.de", 465, "ssl"), "note": ""},
    {"id": "allinkl", "label": "all-inkl.com",
     "pop3": ("w0000000.kasserver.com", 995, "ssl"), "imap": ("w0000000.kasserver.com", 993, "ssl"),
     "smtp": ("w0000000.kasserver.com", 465, "ssl"), "note": "preset.note.allinkl"},
    {"id": "hetzner", "label": "Hetzner",
     "pop3": ("mail.your-server.de", 995, "ssl"), "imap": ("mail.your-server.de", 993, "ssl"),
     "smtp": ("mail.your-server.de", 587, "starttls"), "note": ""},
    {"id": "gmx", "label": "GMX",
     "pop3": ("pop.gmx.net", 995, "ssl"), "imap": ("imap.gmx.net", 993, "ssl"),
     "smtp": ("mail.gmx.net", 587, "starttls"), "note": "preset.note.gmx"},
    {"id": "webde", "label": "WEB.DE",
     "pop3": ("pop3.web.de", 995, "ssl"), "imap": ("imap.web.de", 993, "ssl"),
     "smtp": ("smtp.web.de", 587, "starttls"), "note": "preset.note.gmx"},
    {"id": "tonline", "label": "T-Online",
     "pop3": ("securepop.t-online.de", 995, "ssl"), "imap": ("secureimap.t-online.de", 993, "ssl"),
     "smtp": ("securesmtp.t-online.de", 465, "ssl"), "note": "preset.note.tonline"},
    {"id": "gmail", "label": "Gmail",
     "pop3": ("pop.gmail.com", 995, "ssl"), "imap": ("imap.gmail.com", 993, "ssl"),
     "smtp": ("smtp.gmail.com", 587, "starttls"), "note": "preset.note.gmail", "oauth": "google"},
    {"id": "outlook", "label": "Outlook.com",
     "pop3": ("outlook.office365.com", 995, "ssl"), "imap": ("outlook.office365.com", 993, "ssl"),
     "smtp": ("smtp-mail.outlook.com", 587, "starttls"), "note": "preset.note.outlook",
     "oauth": "microsoft"},
]


def as_json_ready() -> List[Dict[str, Any]]:
    """The presets as plain dicts for the page's JavaScript."""
    result = []
    for preset in PRESETS:
        entry: Dict[str, Any] = {"id": preset["id"], "label": preset["label"], "note": preset["note"],
                                 "oauth": preset.get("oauth", "")}
        for kind in ("pop3", "imap", "smtp"):
            host, port, security = preset[kind]
            entry[kind] = {"host": host, "port": port, "security": security}
        result.append(entry)
    return result
