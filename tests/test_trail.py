"""The mail trail's store, search, retention, CSV and CLI against SQLite (issue 16), no mail servers.

The search and retention tests fill the store with 100,000 rows (fast inserts straight into
SQLite) and assert results, never timing (bench/trail.py measures the time).
"""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from smartpop import cli
from smartpop.collector import state, statedb
from smartpop.collector.state import Key, Store
from smartpop.collector.statehub import PruneTimes
from smartpop.config.schema import parse_config
from smartpop.errors import ConfigError, UsageError
from smartpop.paths import Paths, ensure_data_dir
from smartpop.trail import export, query, record
from smartpop.trail.record import TrailEntry

ROWS = 100_000
NOW = 1_800_000_000.0
ACCOUNTS = ["sammel", "anna-box", "ben-box"]
OUTCOMES = ["delivered"] * 6 + ["fallback", "waiting", "failed", "duplicate"]
USERS = ["anna", "ben", "carla", "dieter", "postmaster"]


def _row(i: int) -> Tuple[Any, ...]:
    """The i-th synthetic trail row: every field a function of i, so the tests can count."""
    return (i, NOW - i * 30.0, ACCOUNTS[i % 3], "", f"u{i}", f"<m{i}@kunde{i % 50}.de>",
            f"bounce{i % 7}@kunde{i % 50}.de", f"chef{i % 11}@kunde{i % 50}.de", None, "Delivered-To",
            "Delivered-To: x", 1000 + i, OUTCOMES[i % 10], 1 if i % 97 == 0 else 0)


def _copies(i: int) -> List[Tuple[Any, ...]]:
    first = f"{USERS[i % 5]}@firma.de"
    copies = [(i, first, "fallback" if OUTCOMES[i % 10] == "fallback" else "user", "250 2.0.0 Ok")]
    if i % 4 == 0:
        copies.append((i, f"{USERS[(i + 1) % 5]}@firma.de", "user", "250 2.0.0 Ok"))
    return copies


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state store with ROWS trail rows, made once for the module (read-only tests share it)."""
    db = tmp_path_factory.mktemp("trail") / "state.sqlite3"
    conn = statedb.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO trail (id, at, account, folder, uid, message_id, sender, from_addr, subject,"
                         " rule, detail, size, outcome, redelivered) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (_row(i) for i in range(1, ROWS + 1)))
        conn.executemany("INSERT INTO trail_copies (trail_id, rcpt, placement, reply) VALUES (?,?,?,?)",
                         (c for i in range(1, ROWS + 1) for c in _copies(i)))
    conn.close()
    return db


def _expect(predicate: Any) -> List[int]:
    """Ids of the synthetic rows that match, newest first."""
    return [i for i in range(1, ROWS + 1) if predicate(i)]


def _ids(rows: List[Dict[str, Any]]) -> List[int]:
    return [r["id"] for r in rows]


# --- search over 100,000 rows --------------------------------------------------------------
def test_search_without_filters_gives_the_newest_first(big_store: Path) -> None:
    rows, total = query.search(big_store, query.Filters(), limit=100)
    assert total == ROWS
    assert _ids(rows) == list(range(1, 101))  # row 1 is the newest (NOW - 30 s)
    assert rows[0]["copies"] == [{"rcpt": "ben@firma.de", "placement": "user", "reply": "250 2.0.0 Ok"}]


@pytest.mark.parametrize(("values", "predicate"), [
    ({"account": "anna-box"}, lambda i: i % 3 == 1),
    ({"outcome": "fallback"}, lambda i: i % 10 == 6),
    ({"outcome": "waiting,failed"}, lambda i: i % 10 in (7, 8)),
    ({"sender": "kunde7.de"}, lambda i: i % 50 == 7),  # kunde7.de, not kunde17.de: the dot is literal
    ({"sender": "CHEF3@"}, lambda i: i % 11 == 3),  # the From address, case-insensitive
    ({"sender": "bounce5@kunde45"}, lambda i: i % 7 == 5 and i % 50 == 45),  # the envelope sender
    ({"rcpt": "carla@"}, lambda i: i % 5 == 2 or (i % 4 == 0 and (i + 1) % 5 == 2)),
    ({"message_id": "<m4242@kunde42.de>"}, lambda i: i == 4242),
    ({"message_id": "m4242@kunde42.de"}, lambda i: i == 4242),
    ({"since": str(NOW - 3000), "until": str(NOW - 1500)}, lambda i: 50 < i <= 100),
    ({"account": "sammel", "outcome": "delivered", "rcpt": "dieter"},
     lambda i: i % 3 == 0 and OUTCOMES[i % 10] == "delivered" and (i % 5 == 3 or (i % 4 == 0 and (i + 1) % 5 == 3))),
    ({"sender": "100%"}, lambda i: False),  # % is literal, not a wildcard
    ({"rcpt": "_"}, lambda i: False),  # so is _
])
def test_search_filters(big_store: Path, values: Dict[str, str], predicate: Any) -> None:
    filters, errors = query.parse_filters(values, now=NOW)
    assert errors == {}
    expected = _expect(predicate)
    rows, total = query.search(big_store, filters, limit=50)
    assert total == len(expected)
    assert _ids(rows) == expected[:50]
    rows, _ = query.search(big_store, filters, limit=20, offset=30)
    assert _ids(rows) == expected[30:50]


def test_each_streams_every_match_with_copies(big_store: Path) -> None:
    filters, _ = query.parse_filters({"sender": "kunde13.de"})
    rows = list(query.each(big_store, filters, chunk=333))
    assert _ids(rows) == _expect(lambda i: i % 50 == 13)
    assert all(r["copies"] for r in rows)


def test_detail_and_counts(big_store: Path) -> None:
    row = query.detail(big_store, 8)
    assert row is not None and row["uid"] == "u8" and len(row["copies"]) == 2
    assert query.detail(big_store, ROWS + 1) is None
    counted = query.counts(big_store, NOW - 30 * 20 - 1)  # rows 1..20
    assert sum(sum(by.values()) for by in counted.values()) == 20
    wanted = sum(1 for i in range(1, 21) if i % 3 == 0 and OUTCOMES[i % 10] == "delivered")
    assert counted["sammel"]["delivered"] == wanted


def test_search_reads_only(big_store: Path) -> None:
    before = big_store.stat().st_mtime_ns
    query.search(big_store, query.Filters(sender="x"), limit=5)
    assert big_store.stat().st_mtime_ns == before
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{big_store}?mode=ro", uri=True).execute("DELETE FROM trail")


def test_no_store_or_an_old_store_is_an_empty_trail(tmp_path: Path) -> None:
    assert query.search(tmp_path / "none.sqlite3", query.Filters()) == ([], 0)
    old = tmp_path / "old.sqlite3"
    sqlite3.connect(old).execute("CREATE TABLE messages (x)").connection.close()
    assert query.search(old, query.Filters()) == ([], 0)
    assert query.detail(old, 1) is None and query.counts(old, 0) == {}


# --- retention over 100,000 rows -------------------------------------------------------------
def test_retention_prunes_the_oldest_in_small_batches_on_the_prune_path(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "state.sqlite3"
    now = time.time()
    conn = statedb.connect(db)
    # 100,000 rows, one every 30 s back from now (15 s off the boundary): 30 days hold 86,400 of them.
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO trail (id, at, account, uid, outcome) VALUES (?, ?, 'sammel', ?, 'delivered')",
                         ((i, now - i * 30.0 + 15, f"u{i}") for i in range(1, ROWS + 1)))
        conn.executemany("INSERT INTO trail_copies (trail_id, rcpt, placement) VALUES (?, 'anna@firma.de', 'user')",
                         ((i,) for i in range(1, ROWS + 1)))
    conn.close()
    old = sum(1 for i in range(1, ROWS + 1) if now - i * 30.0 + 15 < now - 30 * 86400)
    assert 13_000 < old < 14_000
    store = Store(db)
    try:
        monkeypatch.setattr(store.hub, "prunes", PruneTimes())
        store.prune("sammel", "", "1", set())
        counted = store.conn.execute("SELECT COUNT(*), MIN(id) FROM trail").fetchone()
        assert counted[0] == ROWS - state.TRAIL_PRUNE_BATCH  # one small batch of the oldest
        assert counted[1] == 1
        # The next prune within the hour finds nothing vanished: nothing is written (a quiet poll).
        commits = store.commits
        store.prune("sammel", "", "1", set())
        assert store.commits == commits
        assert store.conn.execute("SELECT COUNT(*) FROM trail").fetchone()[0] == ROWS - state.TRAIL_PRUNE_BATCH
        # Prunes that happen anyway (hourly, or after mail vanished) keep going until only 30 days are left.
        for _ in range(old // state.TRAIL_PRUNE_BATCH + 1):
            monkeypatch.setattr(store.hub, "prunes", PruneTimes())
            store.prune("sammel", "", "1", set())
        left = store.conn.execute("SELECT COUNT(*), MAX(id) FROM trail").fetchone()
        assert left == (ROWS - old, ROWS - old)
        assert store.conn.execute("SELECT COUNT(*) FROM trail_copies").fetchone()[0] == ROWS - old
        assert store.conn.execute("SELECT COUNT(*) FROM trail WHERE at < ?", (now - 30 * 86400,)).fetchone()[0] == 0
        # A shorter retention (trail.retention_days) prunes to it.
        for _ in range(40):
            monkeypatch.setattr(store.hub, "prunes", PruneTimes())
            store.prune("sammel", "", "1", set(), trail_days=7)
        assert store.conn.execute("SELECT COUNT(*) FROM trail").fetchone()[0] == 7 * 86400 // 30
    finally:
        store.close()


# --- written with the collector's own records ---------------------------------------------------
def _entry(uid: str, rcpts: List[str], outcome: str = "delivered") -> TrailEntry:
    entry = TrailEntry(message_id=f"<{uid}@x>", sender="kunde@x.de", rule="Delivered-To", outcome=outcome)
    entry.add(rcpts, "user", "250 ok")
    return entry


def test_trail_rides_in_the_batch_of_the_record_that_decides(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = Store(db)
    try:
        key = Key("sammel", "", "1", "u1")
        commits = store.commits
        seq = store.mark_done(key, "<u1@x>", "d1", 10, trail=_entry("u1", ["anna@firma.de"]))
        # Queued, like the 'done' record itself: nothing on disk and no commit of its own yet.
        assert query.search(db, query.Filters()) == ([], 0)
        assert store.commits == commits
        store.sync_upto(seq)
        assert store.commits == commits + 1  # one commit for the record and its trail row
        rows, total = query.search(db, query.Filters())
        assert total == 1 and rows[0]["uid"] == "u1" and rows[0]["copies"][0]["rcpt"] == "anna@firma.de"
        # A message that stays on the server: its trail row is durable with its attempt.
        waiting = _entry("u2", [], outcome="waiting")
        waiting.add(["ben@firma.de"], "waiting", "451 4.3.0 try again")
        store.note_attempt(Key("sammel", "", "1", "u2"), "<u2@x>", "d2", 10, "451", 0.0, trail=waiting)
        assert store.commits == commits + 2
        rows, total = query.search(db, query.Filters(outcome=("waiting",)))
        assert total == 1 and rows[0]["copies"] == [{"rcpt": "ben@firma.de", "placement": "waiting",
                                                      "reply": "451 4.3.0 try again"}]
    finally:
        store.close()


def test_a_crash_before_the_commit_leaves_neither_the_record_nor_its_trail_row(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = Store(db)
    store.mark_done(Key("sammel", "", "1", "u1"), "<u1@x>", "d1", 10, trail=_entry("u1", ["anna@firma.de"]))
    # The process dies here: the queued batch never reaches SQLite.
    store._reader.close()
    store.conn.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM trail").fetchone()[0] == 0
    conn.close()


def test_copies_find_their_row_with_many_threads_and_two_writers(tmp_path: Path) -> None:
    """Group commit from 8 threads over two stores (as two processes would): each copy under its own message."""
    db = tmp_path / "state.sqlite3"
    stores = [Store(db), Store(db)]
    errors: List[BaseException] = []

    def work(n: int) -> None:
        try:
            store = stores[n % 2]
            for i in range(150):
                uid = f"t{n}m{i}"
                rcpts = [f"{uid}.{k}@firma.de" for k in range(random.randint(0, 4))]
                if i % 5 == 0:
                    store.note_attempt(Key(f"acc{n}", "", "1", uid), f"<{uid}>", "", 1, "451", 0.0,
                                       trail=_entry(uid, rcpts, outcome="waiting"))
                else:
                    store.mark_done(Key(f"acc{n}", "", "1", uid), f"<{uid}>", "", 1, trail=_entry(uid, rcpts))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, uid FROM trail").fetchall()
    assert len(rows) == 8 * 150
    uid_of = dict(rows)
    copies = conn.execute("SELECT trail_id, rcpt FROM trail_copies").fetchall()
    for trail_id, rcpt in copies:
        assert rcpt.startswith(uid_of[trail_id] + "."), (trail_id, rcpt)
    conn.close()


def test_hostile_header_text_is_stored_on_one_line_and_bounded(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = Store(db)
    hostile = "Re: a\r\nBcc: evil@x\x00\x1b[31m\u202egnp.exe\u2028" + "A" * 100_000
    entry = TrailEntry(message_id="<" + "x" * 5000 + ">", sender="a@b\nX-Injected: 1", from_addr="\u202eevil@x",
                       subject=hostile, rule="Delivered-To", detail="d" * 9000, size=5)
    entry.add(["anna@firma.de"], "user", "250 ok\r\n" + "r" * 5000)
    store.mark_done(Key("sammel", "", "1", "u1"), "", "", 5, trail=entry)
    store.close()
    row = query.detail(db, 1)
    assert row is not None
    assert row["subject"].startswith("Re: a\\r\\nBcc: evil@x\\x00\\x1b[31m\\u202egnp.exe\\u2028AAA")
    assert len(row["subject"]) == record.SUBJECT_MAX
    assert len(row["message_id"]) == record.MESSAGE_ID_MAX and len(row["detail"]) == record.DETAIL_MAX
    assert row["sender"] == "a@b\\nX-Injected: 1" and row["from_addr"] == "\\u202eevil@x"
    assert len(row["copies"][0]["reply"]) == record.REPLY_MAX
    for value in (row["subject"], row["sender"], row["from_addr"], row["copies"][0]["reply"]):
        assert value.isprintable()


# --- CSV ---------------------------------------------------------------------------------------
def test_csv_cells_are_never_formulas_and_stay_on_one_line() -> None:
    row = {"at": NOW, "account": "sammel", "folder": "", "uid": "1", "message_id": "<a@b>",
           "sender": "=HYPERLINK(\"http://evil\")", "from_addr": "+49@x", "subject": "-2+3", "rule": "@SUM(A1)",
           "detail": "line\nbreak", "size": 12, "outcome": "delivered", "redelivered": True,
           "copies": [{"rcpt": "anna@firma.de", "placement": "user", "reply": "250 ok"}]}
    text = "".join(export.lines([row]))
    assert text.startswith(export.BOM + "time,account,")
    parsed = list(csv.reader(io.StringIO(text[1:])))
    assert parsed[0] == export.HEADER
    cells = dict(zip(parsed[0], parsed[1]))
    assert cells["sender"] == "'=HYPERLINK(\"http://evil\")"
    assert cells["from"] == "'+49@x" and cells["subject"] == "'-2+3" and cells["rule"] == "'@SUM(A1)"
    assert cells["detail"] == "line\\nbreak" and cells["redelivered"] == "yes"
    assert cells["copies"] == "anna@firma.de user: 250 ok"
    assert len(parsed) == 2


# --- times -------------------------------------------------------------------------------------
def test_parse_time() -> None:
    assert query.parse_time("2h", now=NOW) == NOW - 7200
    assert query.parse_time("3d", now=NOW) == NOW - 3 * 86400
    assert query.parse_time("30m", now=NOW) == NOW - 1800
    assert query.parse_time("1w", now=NOW) == NOW - 7 * 86400
    assert query.parse_time(" ", now=NOW) is None
    assert query.parse_time("1800000000", now=NOW) == 1_800_000_000.0
    assert query.parse_time("2027-01-15T08:00:00Z") == 1_800_000_000.0
    assert query.parse_time("2027-01-15T08:00:00Z") == query.parse_time("2027-01-15T09:00:00+01:00")
    # "+" in a link's query string that was not percent-encoded arrives as a blank.
    assert query.parse_time("2027-01-15T09:00:00 01:00") == 1_800_000_000.0
    assert query.parse_time("2027-01-15 09:00 01:00") == 1_800_000_000.0
    local = time.mktime((2027, 1, 15, 0, 0, 0, 0, 0, -1))
    assert query.parse_time("2027-01-15") == local
    assert query.parse_time("2027-01-15", end_of_day=True) == time.mktime((2027, 1, 16, 0, 0, 0, 0, 0, -1))
    assert query.parse_time("2027-01-15 14:30") == time.mktime((2027, 1, 15, 14, 30, 0, 0, 0, -1))
    today = query.parse_time("today", now=NOW)
    assert today is not None and NOW - 86400 < today <= NOW
    for bad in ("yesterday-ish", "2027-13-01", "5 years", "12"):
        with pytest.raises(UsageError):
            query.parse_time(bad, now=NOW)
    _, errors = query.parse_filters({"since": "soon", "outcome": "delivered,lost"})
    assert set(errors) == {"since", "outcome"}


# --- config ------------------------------------------------------------------------------------
def test_trail_settings_default_when_absent_and_are_validated() -> None:
    base: Dict[str, Any] = {"schema_version": 1, "local_domains": ["firma.de"]}
    config = parse_config(base)
    assert (config.trail.subjects, config.trail.retention_days) == (False, 30)
    config = parse_config({**base, "trail": {"subjects": True, "retention_days": 7}})
    assert (config.trail.subjects, config.trail.retention_days) == (True, 7)
    with pytest.raises(ConfigError) as bad:
        parse_config({**base, "trail": {"retention_days": 0}})
    assert bad.value.key == "trail.retention_days"
    with pytest.raises(ConfigError) as unknown:
        parse_config({**base, "trail": {"subject": True}})
    assert unknown.value.key == "trail.subject"


# --- CLI -----------------------------------------------------------------------------------------
def _cli_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    paths = Paths(data)
    ensure_data_dir(paths)
    (data / "config.json").write_text(json.dumps({"schema_version": 1, "local_domains": ["firma.de"]}))
    (data / "config.json").chmod(0o600)
    store = Store(paths.state_db)
    fallback = TrailEntry(message_id="<f@kunde.de>", sender="kunde@kunde.de", from_addr="chef@kunde.de",
                          rule="fallback", detail="no local recipient found")
    fallback.add(["ghost@firma.de"], "refused", "550 5.1.1 unknown")
    fallback.add(["postmaster@firma.de"], "fallback", "250 ok")
    fallback.settle(placed=True)
    store.mark_done(Key("sammel", "", "1", "u1"), "<f@kunde.de>", "", 1, trail=fallback)
    store.mark_done(Key("sammel", "", "1", "u2"), "<d@other.de>", "", 1, trail=_entry("u2", ["anna@firma.de"]))
    store.close()
    return data


def test_cli_trail_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _cli_data(tmp_path)
    assert cli.main(["--data", str(data), "trail", "--since", "1h", "--sender", "kunde.de"]) == 0
    out = capsys.readouterr().out
    assert "fallback" in out and "ghost@firma.de (refused)" in out and "postmaster@firma.de (fallback)" in out
    assert "1 of 1 message(s) shown" in out and "other.de" not in out
    assert cli.main(["--data", str(data), "trail", "--rcpt", "anna", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["total"] == 1 and document["rows"][0]["message_id"] == "<u2@x>"
    assert document["rows"][0]["copies"] == [{"rcpt": "anna@firma.de", "placement": "user", "reply": "250 ok"}]
    assert cli.main(["--data", str(data), "trail", "--message-id", "f@kunde.de", "--outcome", "fallback"]) == 0
    assert "1 of 1" in capsys.readouterr().out


def test_cli_trail_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _cli_data(tmp_path)
    assert cli.main(["--data", str(data), "trail", "--since", "last tuesday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert cli.main(["--data", str(data), "trail", "--outcome", "lost"]) == 2
    assert "--outcome" in capsys.readouterr().err
    assert cli.main(["--data", str(data), "trail", "--limit", "0"]) == 2


@pytest.mark.parametrize("value, address", [
    ('"Müller, Anna" <anna@example.com>', "anna@example.com"),
    ('"a@b" <real@example.com>', "real@example.com"),
    ("anna@example.com (Anna)", "anna@example.com"),
    ("undisclosed-recipients:;", ""),
    ("Broken <", ""),
])
def test_the_from_address_the_trail_shows(value: str, address: str) -> None:
    from smartpop.collector.trace import address_in

    assert address_in(value) == address
