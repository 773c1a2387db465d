"""The hostile and odd corpus (issue 3, point 6): every message delivered intact or to the fallback.

tests/data/messages/*.eml with expected.json (file -> local mailboxes). One pass must place
all of them, each exactly once per expected mailbox, with the body byte-identical (line ends
aside: the provider serves CRLF, Postfix stores LF), and leave nothing on the provider.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from smartpop.collector import service
from smartpop.collector.headers import split_header
from support.collect import CORPUS_DOMAIN, Env

pytestmark = pytest.mark.mailstack

CORPUS = Path(__file__).resolve().parents[1] / "data" / "messages"
USERS = ["anna", "ben", "postmaster"]


def _body(data: bytes) -> bytes:
    return split_header(data.replace(b"\r\n", b"\n"))[1]


def _corpus() -> Dict[str, List[str]]:
    expected: Dict[str, List[str]] = json.loads((CORPUS / "expected.json").read_text())
    return expected


def test_corpus_is_large_enough() -> None:
    assert len(_corpus()) >= 30
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(_corpus())


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_corpus_delivered_intact_or_to_fallback(env: Env, protocol: str) -> None:
    catchall = f"sammel@{CORPUS_DOMAIN}"
    env.stack.add_users([(catchall, "corpus-pw")] + [(f"{u}@{CORPUS_DOMAIN}", "x") for u in USERS])
    for user in USERS:  # the corpus mailboxes are shared by the two protocol runs
        shutil.rmtree(env.stack.local_maildir(f"{user}@{CORPUS_DOMAIN}"), ignore_errors=True)
    assert env.stack.provider_count(catchall) == 0
    expected = _corpus()
    names = sorted(expected)
    env.stack.fill(catchall, [(CORPUS / n).read_bytes() for n in names])
    served = dict(zip(names, env.stack.provider_messages(catchall, protocol)))
    account = env.account(protocol=protocol, username=catchall, password="corpus-pw")
    config = env.write_config([account], local_domains=[CORPUS_DOMAIN],
                              aliases={f"info@{CORPUS_DOMAIN}": [f"anna@{CORPUS_DOMAIN}", f"ben@{CORPUS_DOMAIN}"]},
                              fallback_recipient=f"postmaster@{CORPUS_DOMAIN}")
    summary = service.fetch_all(env.paths, config)
    assert summary.ok, summary.lines()
    assert env.stack.provider_count(catchall) == 0
    env.stack.drain()
    delivered = {u: env.stack.maildir(f"{u}@{CORPUS_DOMAIN}") for u in USERS}
    want = Counter(u for n in names for u in expected[n])
    assert {u: len(m) for u, m in delivered.items()} == {u: want[u] for u in USERS}
    for name in names:
        original = (CORPUS / name).read_bytes()
        # What the provider serves is what we must deliver. Dovecot's IMAP turns NUL into 0x80
        # (NUL is not allowed in an IMAP literal); otherwise it must not have altered anything.
        if protocol == "imap":
            original = original.replace(b"\x00", b"\x80")
        assert _body(served[name]) == _body(original), f"{name}: the provider changed it"
        for user in expected[name]:
            bodies = [_body(m) for m in delivered[user]]
            assert any(b.endswith(_body(original)) for b in bodies), f"{name} missing or altered in {user}"
    for message in delivered["anna"] + delivered["ben"]:
        header = split_header(message)[0]  # the nested message/rfc822 keeps its own Delivered-To, in the body
        assert header.count(b"\nDelivered-To:") == 1  # Postfix's own; the provider's were renamed
