"""What a failure while handling one message means: the one policy for retrieving and for placing it.

- END_RUN: the provider session, MailPlus or the store is gone (or the process is told to
  stop): the run ends, and a message not finished stays on the server.
- SKIP: the server refused this one message (it vanished, RETR was refused): the session
  still works, and the next run tries the message again.
- HOLD: anything else (a message SmartPop cannot handle): it stays on the server, noted with
  the error, and is tried again after placement.UNPLACEABLE_RETRY.
"""

from __future__ import annotations

from smartpop.errors import AuthError, ConnectError, LockBusy, ProtocolError, StateError

END_RUN = "end run"
SKIP = "skip"
HOLD = "hold"

# Errors that end the whole run rather than one message.
_FATAL = (ConnectError, AuthError, LockBusy, StateError)


def classify(exc: BaseException) -> str:
    """END_RUN, SKIP or HOLD for a failure while retrieving or placing one message."""
    if isinstance(exc, _FATAL) or not isinstance(exc, Exception):
        return END_RUN
    if isinstance(exc, ProtocolError):
        return SKIP
    return HOLD
