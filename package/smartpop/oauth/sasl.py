"""The XOAUTH2 SASL mechanism as IMAP and POP3 speak it: pure string work, no sockets.

The client sends base64("user=" user ^A "auth=Bearer " token ^A ^A). A server that refuses
answers with a continuation carrying base64 of a JSON object (status, schemes, scope); the
client must answer that with an empty line, and only then gets the final NO / -ERR.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from ..errors import ConfigError
from ..log import escape_controls, redact

MECHANISM = "XOAUTH2"
# What the client sends after an error challenge, so the server can finish with NO / -ERR.
FAILURE_ACK = ""
# RFC 5034: an AUTH command line with its initial response must stay within 255 octets; a real
# Microsoft token is far longer, so POP3 then sends the response after the "+" continuation.
POP3_LINE_LIMIT = 255
# A hostile server's challenge is read this far and each field shown this long at most.
CHALLENGE_MAX = 16384
FIELD_MAX = 200


def initial_response(user: str, access_token: str) -> str:
    """The base64 XOAUTH2 client response for `user` with `access_token` (ASCII, no line break)."""
    for name, value in (("user", user), ("access token", access_token)):
        # ^A separates the fields: a control character inside one would forge another field.
        if not value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ConfigError(f"XOAUTH2: the {name} is empty or holds a control character", key="user",
                              code="oauth_sasl_field", params={"field": name})
    raw = f"user={user}\x01auth=Bearer {access_token}\x01\x01".encode()
    return base64.b64encode(raw).decode("ascii")


def pop3_auth_lines(response: str) -> Tuple[str, Optional[str]]:
    """The POP3 AUTH command and, when the response does not fit on its line, the line after "+"."""
    inline = f"AUTH {MECHANISM} {response}"
    if len(inline) + 2 <= POP3_LINE_LIMIT:  # + CRLF
        return inline, None
    return f"AUTH {MECHANISM}", response


@dataclass(frozen=True)
class Failure:
    """What a server's XOAUTH2 error challenge said, each field escaped and bounded."""

    status: str
    scope: str
    schemes: str

    def reason(self) -> str:
        """One readable line for the account's error ("status 401, scope ...")."""
        if not (self.status or self.scope or self.schemes):
            return "the server refused the token without saying why"
        parts = [f"{name} {value}" for name, value in
                 (("status", self.status), ("scope", self.scope), ("schemes", self.schemes)) if value]
        return ", ".join(parts)


def _field(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    text = escape_controls(redact(text))
    return text if len(text) <= FIELD_MAX else text[:FIELD_MAX] + "..."


def parse_failure(challenge: Union[str, bytes]) -> Failure:
    """Decode the payload of a server's error continuation; garbage gives an empty Failure."""
    if isinstance(challenge, bytes):
        challenge = challenge.decode("ascii", "replace")
    challenge = challenge.strip()[:CHALLENGE_MAX]
    try:
        data = json.loads(base64.b64decode(challenge, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        return Failure("", "", "")
    if not isinstance(data, dict):
        return Failure("", "", "")
    return Failure(_field(data.get("status")), _field(data.get("scope")), _field(data.get("schemes")))


def describe_failure(challenge: Union[str, bytes]) -> str:
    """A server's error challenge as one readable, escaped line."""
    return parse_failure(challenge).reason()
