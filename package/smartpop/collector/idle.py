"""IMAP IDLE (RFC 2177): wait on the server for new mail instead of sleeping a whole interval.

imaplib has no idle() before Python 3.14, so the command is sent by hand. The session is
only used for waiting: when the wait ends (news, timeout or stop) it is simply closed, and
the normal collection run follows. A stop request shuts the socket down from a watcher thread,
which wakes the blocked read at once (a read timeout would leave imaplib's buffered
socket file unusable, so timeouts only ever end the wait).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from smartpop.collector.imap import ImapSource
from smartpop.config.schema import Account
from smartpop.errors import ProtocolError, TemporaryError

log = logging.getLogger(__name__)

# RFC 2177: re-issue IDLE at least every 29 minutes or the server may drop the session.
MAX_IDLE = 29 * 60


def _announces_mail(line: bytes) -> bool:
    """True for an untagged '* n EXISTS' or '* n RECENT'."""
    words = line.split()
    return len(words) == 3 and words[0] == b"*" and words[2].upper() in (b"EXISTS", b"RECENT")


def wait_for_mail(account: Account, timeout: float, stop: threading.Event, known: int = -1,
                  connect_timeout: float = 60.0) -> bool:
    """Block until the server announces new mail (True), or `timeout`/`stop`/an error (False).

    `known` is how many messages the last run left in the folder: more than that at SELECT
    means mail arrived between that run and this IDLE.
    """
    try:
        source = ImapSource.connect(account, connect_timeout)
    except TemporaryError as exc:
        log.info("%s: IDLE not possible this round (%s)", account.name, exc)
        return False
    imap = source._imap
    if known >= 0 and source.exists > known:
        source.abort()
        return True
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(1.0):
            if stop.is_set():
                # Shut the socket down, do not close it: closing imaplib's buffered file here
                # would wait for the lock the blocked reader holds. The shutdown wakes the
                # reader, whose `finally` then closes everything.
                sock = imap.sock
                if sock is not None:
                    try:
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass
                return

    threading.Thread(target=watch, name=f"smartpop-idle-{account.name}", daemon=True).start()
    try:
        tag = imap._new_tag()
        imap.send(tag + b" IDLE\r\n")
        if not imap.readline().startswith(b"+"):
            raise ProtocolError(f"{account.host}:{account.port} refused IDLE")
        deadline = time.monotonic() + min(timeout, MAX_IDLE)
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            assert imap.sock is not None
            imap.sock.settimeout(remaining)
            line = imap.readline()
            if not line:
                return False
            if _announces_mail(line):
                log.info("%s: the server announced new mail", account.name)
                return True
        return False
    except (OSError, TemporaryError, ValueError) as exc:
        if not isinstance(exc, socket.timeout) and not stop.is_set():
            log.info("%s: IDLE ended (%s); polling instead this round", account.name, exc)
        return False
    except Exception as exc:  # imaplib.abort and friends: never let IDLE break the daemon
        log.info("%s: IDLE ended (%s); polling instead this round", account.name, exc)
        return False
    finally:
        finished.set()
        source.abort()
