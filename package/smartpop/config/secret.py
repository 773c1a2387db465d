"""A string wrapper that never shows its value in repr, str or logs."""

from __future__ import annotations

from smartpop.log import REDACTED, register_secrets


class Secret:
    """Holds a password; only `reveal()` gives the value back."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secrets([value])

    def reveal(self) -> str:
        """Return the clear-text value (for the protocol exchange only)."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})" if self._value else "Secret('')"

    __str__ = __repr__
