"""Lazy access to the collector and relay services, so the UI works while one is not shipped yet."""

from __future__ import annotations

import importlib
from types import ModuleType


class ServiceUnavailable(Exception):
    """The named service module is not part of this build yet."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self.service = service


def _load(module: str, service: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only a missing service module means "not available"; a broken import inside it is a bug.
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ServiceUnavailable(service) from None
        raise


def collector() -> ModuleType:
    """smartpop.collector.service, or ServiceUnavailable."""
    return _load("smartpop.collector.service", "collector")


def relay() -> ModuleType:
    """smartpop.relay.service, or ServiceUnavailable."""
    return _load("smartpop.relay.service", "relay")
