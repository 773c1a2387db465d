"""Which class speaks which protocol: the one place that knows every Source implementation.

source.py states the contract and imports no protocol; pop3.py and imap.py implement it.
The protocol modules are imported when an account of theirs is opened, not with this
module: imaplib alone costs a few ms that a POP3-only `fetch` does not need.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from smartpop.collector.credential import Credential, password_credential
from smartpop.collector.source import Source
from smartpop.config.schema import Account

Connect = Callable[[Account, float, Credential], Source]


def _pop3(account: Account, timeout: float, credential: Credential) -> Source:
    """Pop3Source.connect; the return type makes mypy check that Pop3Source keeps the contract."""
    from smartpop.collector.pop3 import Pop3Source

    return Pop3Source.connect(account, timeout, credential)


def _imap(account: Account, timeout: float, credential: Credential) -> Source:
    """ImapSource.connect; the return type makes mypy check that ImapSource keeps the contract."""
    from smartpop.collector.imap import ImapSource

    return ImapSource.connect(account, timeout, credential)


# Keyed by Account.protocol (config.schema admits exactly these).
CONNECT: Dict[str, Connect] = {
    "pop3": _pop3,
    "imap": _imap,
}


def open_source(account: Account, timeout: float, credential: Optional[Credential] = None) -> Source:
    """Connect and log in to `account` with its protocol (by default with its password)."""
    login = credential if credential is not None else password_credential(account)
    # Anything else than "imap" went to POP3 before the registry existed; kept so.
    return CONNECT.get(account.protocol, _pop3)(account, timeout, login)
