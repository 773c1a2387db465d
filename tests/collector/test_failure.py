"""What a failure while handling one message means for it and for the run (no servers)."""

from __future__ import annotations

import pytest

from smartpop.collector import failure
from smartpop.errors import AuthError, ConfigError, ConnectError, LockBusy, ProtocolError, StateError


@pytest.mark.parametrize("exc", [ConnectError("gone"), AuthError("no"), LockBusy("busy"), StateError("full"),
                                 KeyboardInterrupt(), SystemExit(1)])
def test_what_ends_the_run(exc: BaseException) -> None:
    assert failure.classify(exc) == failure.END_RUN


def test_a_refused_message_is_skipped_this_run() -> None:
    assert failure.classify(ProtocolError("-ERR no such message")) == failure.SKIP


@pytest.mark.parametrize("exc", [ValueError("bug"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
                                 ConfigError("odd")])
def test_anything_else_holds_the_message(exc: Exception) -> None:
    assert failure.classify(exc) == failure.HOLD
