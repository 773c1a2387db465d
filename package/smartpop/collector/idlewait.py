"""The daemon's book of IMAP IDLE sessions: who waits, who is handed over, what the status says.

The scheduler thread select()s on the waiting sessions; workers open or renew sessions and
hand them over here, and the scheduler adopts them on its next look. Only the scheduler
touches `sessions`; `hand_over` is the one method a worker calls. The push state (how an
account gets its mail: "idle", or why it is polled) is written to the status only when it
changes, since a write per run would wake the NAS's disks.
"""

from __future__ import annotations

import logging
import selectors
import threading
from typing import Dict, List, Optional

from smartpop.collector import statusread
from smartpop.collector.idle import IdleSession
from smartpop.paths import Paths

log = logging.getLogger(__name__)


class IdleWaits:
    """The sessions waiting in IDLE (registered with the scheduler's selector) and the push states."""

    def __init__(self, paths: Paths, selector: selectors.BaseSelector) -> None:
        self.paths = paths
        self._selector = selector
        self.sessions: Dict[str, IdleSession] = {}  # scheduler thread only
        self._arrivals: List[IdleSession] = []  # sessions a worker hands to the scheduler
        self._push: Dict[str, Optional[str]] = {}  # the push state last recorded per account
        self._lock = threading.Lock()

    def hand_over(self, session: IdleSession) -> None:
        """A worker's session for the scheduler (which must be woken to adopt it)."""
        with self._lock:
            self._arrivals.append(session)

    def arrivals(self) -> List[IdleSession]:
        """The sessions handed over since the last call."""
        with self._lock:
            arrivals, self._arrivals = self._arrivals, []
        return arrivals

    def add(self, session: IdleSession) -> bool:
        """Wait on `session`; False (and the session closed) if its socket cannot be selected on."""
        try:
            self._selector.register(session, selectors.EVENT_READ, session)
        except (OSError, ValueError):
            session.close()
            return False
        self.sessions[session.account.name] = session
        return True

    def take(self, name: str) -> Optional[IdleSession]:
        """Stop waiting on the account's session and return it, still open (to renew it)."""
        session = self.sessions.pop(name, None)
        if session is not None:
            try:
                self._selector.unregister(session)
            except (KeyError, ValueError, OSError):
                pass
        return session

    def end(self, name: str) -> None:
        """Stop waiting on the account's session and close it."""
        session = self.take(name)
        if session is not None:
            session.close()

    def end_broken(self) -> List[str]:
        """End the sessions whose socket went bad; returns their accounts."""
        broken = []
        for name, session in list(self.sessions.items()):
            try:
                session.fileno()
            except Exception:
                self.end(name)
                broken.append(name)
        return broken

    def end_all(self) -> None:
        """Close every session, waiting or just handed over (at stop)."""
        for name in list(self.sessions):
            self.end(name)
        for session in self.arrivals():
            session.close()

    def set_push(self, name: str, push: Optional[str]) -> None:
        """Record how the account gets its mail, when that changes (a write only then)."""
        if self._push.get(name, "unknown") == push:
            return
        try:
            statusread.set_push(self.paths, name, push)
        except Exception as exc:
            # Not remembered as recorded: the next call writes it again. Remembering it anyway
            # left the status saying the old way (or nothing) until the way changed once more.
            log.warning("%s: could not record the IDLE state: %s", name, exc)
            return
        self._push[name] = push

    def push(self, name: str) -> Optional[str]:
        """The push state last recorded for the account (None: not pushed, or not recorded)."""
        return self._push.get(name)

    def clear_push(self) -> None:
        """Nobody waits in IDLE once the daemon stopped: say so in every status that said otherwise."""
        for name, push in list(self._push.items()):
            if push is not None:
                statusread.set_push(self.paths, name, None)
