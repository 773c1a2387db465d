"""What every config.json record parser shares: defaults of absent keys, and key checking.

Pure logic, no I/O; schema.py and accountschema.py build their parsers from these.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Callable, Dict, List, Mapping

from smartpop.config import validators as v

Parser = Callable[[str, Any], Any]


def absent(value: Any) -> Dict[str, Any]:
    """Field metadata: the value config.json implies when it leaves this key out (see default_of).

    For fields the constructor still requires: a dataclass default would force them behind the
    optional fields, and with them the keys of every config.json written."""
    return {"absent": value}


def defaults(record: Any) -> Dict[str, Any]:
    """Each setting of dataclass `record` that config.json may leave out, with the value it then takes."""
    found: Dict[str, Any] = {}
    for item in fields(record):
        if "absent" in item.metadata:
            found[item.name] = item.metadata["absent"]
        elif item.default is not MISSING:
            found[item.name] = item.default
        elif item.default_factory is not MISSING:
            found[item.name] = item.default_factory()
    return found


def default_of(record: Any, name: str) -> Any:
    """The value setting `name` of dataclass `record` takes when config.json leaves it out (KeyError: none)."""
    return defaults(record)[name]


def reader(data: Mapping[str, Any], record: Any) -> Callable[[str], Any]:
    """`get(name)`: the document's value for `name`, or the record's default when the key is absent."""
    known = defaults(record)
    return lambda name: data[name] if name in data else known[name]


def check_keys(key: str, raw: Any, allowed: List[str], required: List[str]) -> Mapping[str, Any]:
    """Reject non-objects, unknown keys and missing required keys."""
    if not isinstance(raw, dict):
        raise v.fail(key or "config", "must be a JSON object", f"make {key or 'the file'} a {{...}} object",
                     code="not_an_object")
    for name in raw:
        if name not in allowed:
            where = f"{key}.{name}" if key else name
            raise v.fail(where, "is not a known setting",
                         f"remove {where!r} (known here: {', '.join(sorted(allowed))})",
                         code="unknown_setting", known=", ".join(sorted(allowed)))
    for name in required:
        if name not in raw or raw[name] in (None, ""):
            where = f"{key}.{name}" if key else name
            raise v.fail(where, "is missing", f"add {where}", code="missing")
    return raw
