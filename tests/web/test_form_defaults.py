"""The forms start from the defaults config.json implies, which the schema's records state once."""

from __future__ import annotations

import re
from typing import Dict

from webrig import Browserless, Rig

from smartpop.config.schema import Account, SenderRelay, default_of, defaults
from smartpop.web.forms import ACCOUNT_FIELDS, new_account_values


def _selected(page: str, name: str) -> str:
    """The selected option of the <select name=...> on `page`."""
    block = re.search(rf'<select [^>]*name="{name}">(.*?)</select>', page, re.S)
    assert block is not None, name
    chosen = re.findall(r'<option value="([^"]*)" selected>', block.group(1))
    assert len(chosen) == 1, (name, chosen)
    return chosen[0]


def _inputs(page: str) -> Dict[str, str]:
    """name -> the whole <input> tag, for every named input on `page`."""
    return {m.group(1): m.group(0) for m in re.finditer(r'<input [^>]*name="([^"]+)"[^>]*>', page)}


def test_the_new_account_form_shows_the_schema_defaults(rig: Rig, admin: Browserless) -> None:
    default = defaults(Account)
    page = admin.get("/accounts/new").text
    for name in ("protocol", "security", "mode"):
        assert _selected(page, name) == default[name]
    inputs = _inputs(page)
    for name in ("interval", "folder"):
        assert f'value="{default[name]}"' in inputs[name]
    for name in ("enabled", "allow_insecure", "keep_on_server", "idle"):
        assert (" checked" in inputs[name]) is default[name], name
    for name in ("deliver_to", "ca_file", "port"):
        assert 'value=""' in inputs[name], name


def test_the_new_account_values_are_the_defaults_of_every_field_the_form_has() -> None:
    shown = new_account_values()
    default = defaults(Account)
    assert shown == {**{k: v for k, v in default.items() if k in ACCOUNT_FIELDS}, "port": ""}
    assert {"protocol", "security", "mode", "enabled", "interval", "folder"} <= set(shown)


def test_the_sender_relay_form_starts_at_the_schema_default(rig: Rig, admin: Browserless) -> None:
    page = admin.get("/relay/").text
    block = re.search(r'<select id="sr-security" name="security">(.*?)</select>', page, re.S)
    assert block is not None
    assert re.findall(r'<option value="([^"]*)" selected>', block.group(1)) == [default_of(SenderRelay, "security")]
