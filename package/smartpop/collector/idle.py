"""IMAP IDLE (RFC 2177) as the schedule of an account: wait on the server instead of polling.

An `IdleSession` is a logged-in session with the folder selected and IDLE started. It is
only used for waiting: the daemon's scheduler select()s on its socket together with every
other session, so waiting costs no thread and no timer. When the server announces new mail
the session is closed and the normal collection run follows. Before RFC 2177's 29 minutes
are up the session is renewed (DONE, then IDLE again) on the same connection.

A session logged in with an OAuth2 access token must not outlive the token: Dovecot keeps an
authenticated session after the token expires, Microsoft ends it. So before `expires_at` the
session is closed and a new one logged in with a fresh token (`relogin`); the new SELECT shows
whatever arrived in between, so no announcement is lost.
"""

from __future__ import annotations

import logging
import time
from typing import List, Optional

from smartpop.collector.credential import Credential
from smartpop.collector.imap import ImapSource
from smartpop.collector.source import IdleSource
from smartpop.config.schema import Account
from smartpop.errors import SmartPopError

log = logging.getLogger(__name__)

# RFC 2177: re-issue IDLE at least every 29 minutes or the server may drop the session.
MAX_IDLE = 29 * 60
# Renewed this long before MAX_IDLE, so a slow renewal still lands in time.
RENEW_MARGIN = 60
# A session with an access token logs in again this long before the token's expires_at ...
RELOGIN_MARGIN = 30.0
# ... but never sooner than this after its login, so a short-lived token cannot cause a login loop.
MIN_LOGIN_LIFE = 5.0


class IdleUnavailable(SmartPopError):
    """The server cannot push for this account (no IDLE, or it refused it): poll instead."""


def announces_mail(line: bytes) -> bool:
    """True for an untagged '* n EXISTS' or '* n RECENT'."""
    words = line.split()
    return len(words) == 3 and words[0] == b"*" and words[2].upper() in (b"EXISTS", b"RECENT")


def _says_bye(line: bytes) -> bool:
    return line[:6].upper() == b"* BYE "


class IdleSession:
    """One account's session waiting in IDLE; `news()` is called when its socket is readable."""

    def __init__(self, account: Account, source: IdleSource, expires_at: Optional[float] = None) -> None:
        self.account = account
        self.source = source
        self.started = time.monotonic()
        self.mail = False  # the server announced new mail
        self.known = source.exists  # the message count at login, for the check after a re-login
        # When (time.monotonic) the token runs out and a new login is due; None: a password.
        self.login_due: Optional[float] = None
        if expires_at is not None:
            left = expires_at - time.time() - RELOGIN_MARGIN
            self.login_due = self.started + max(left, MIN_LOGIN_LIFE)

    @classmethod
    def open(cls, account: Account, known: int = -1, timeout: float = 60.0,
             credential: Optional[Credential] = None) -> IdleSession:
        """Log in, select, start IDLE; `.mail` is already True if the folder holds more than `known`.

        Raises IdleUnavailable when the server does not offer IDLE, TemporaryError (and the
        other SmartPopErrors of a login) when it cannot be reached.
        """
        source = ImapSource.connect(account, timeout, credential)
        try:
            if b"IDLE" not in source.capabilities:
                raise IdleUnavailable(f"{account.host} does not offer IMAP IDLE")
            session = cls(account, source, None if credential is None else credential.expires_at)
            if known >= 0 and source.exists > known:
                session.mail = True  # arrived between the last run and now: no need to wait
                return session
            try:
                source.idle_start()
            except SmartPopError as exc:
                if "refused IDLE" in str(exc):
                    raise IdleUnavailable(str(exc)) from None
                raise
            session._take(source.idle_read() or [])
            return session
        except BaseException:
            source.abort()
            raise

    def fileno(self) -> int:
        """The socket, for select()."""
        return self.source.idle_fileno()

    def due(self) -> float:
        """When (time.monotonic) this IDLE must be renewed, or its login with it."""
        renew = self.started + MAX_IDLE - RENEW_MARGIN
        return renew if self.login_due is None else min(renew, self.login_due)

    def needs_login(self) -> bool:
        """True once the token is about to run out: renewing IDLE is not enough, log in again."""
        return self.login_due is not None and time.monotonic() >= self.login_due

    def news(self) -> Optional[bool]:
        """Read what the server sent: True for new mail, False for nothing, None if the session ended."""
        try:
            lines = self.source.idle_read()
        except Exception as exc:  # whatever broke, this session cannot wait any more
            log.info("%s: IDLE session lost (%s)", self.account.name, exc)
            return None
        if lines is None:
            return None
        if not self._take(lines):
            return None
        return self.mail

    def _take(self, lines: List[bytes]) -> bool:
        """Note announced mail; False if the server said goodbye."""
        for line in lines:
            if announces_mail(line):
                if not self.mail:
                    log.info("%s: the server announced new mail", self.account.name)
                self.mail = True
            elif _says_bye(line):
                return False
        return True

    def renew(self) -> None:
        """DONE, then IDLE again on the same connection (blocking; run it outside the scheduler)."""
        self._take(self.source.idle_done())
        if self.mail:
            return
        self.source.idle_start()
        self.started = time.monotonic()
        self._take(self.source.idle_read() or [])

    def relogin(self, credential: Credential, timeout: float = 60.0) -> IdleSession:
        """Close this session and open a new one with `credential`; `.mail` if mail came meanwhile."""
        self.close()
        return IdleSession.open(self.account, known=self.known, timeout=timeout, credential=credential)

    def close(self) -> None:
        """Drop the connection (IDLE changed nothing, so there is nothing to commit)."""
        self.source.abort()
