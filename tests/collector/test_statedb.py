"""The state store's file: opening an older store, rows by name, one batch in one transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from smartpop.collector import statedb


def test_an_older_store_gets_the_added_columns(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    old = sqlite3.connect(str(path))
    old.execute("CREATE TABLE account_status (account TEXT PRIMARY KEY, last_run REAL)")
    old.execute("CREATE TABLE messages (account TEXT, folder TEXT, uidvalidity TEXT, uid TEXT, state TEXT,"
                " first_seen REAL, PRIMARY KEY (account, folder, uidvalidity, uid))")
    old.commit()
    old.close()
    conn = statedb.connect(path)
    try:
        assert {"redelivered", "push"} <= statedb.columns_of(conn, "account_status")
        assert "listed_size" in statedb.columns_of(conn, "messages")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        conn.close()


def test_named_rows_read_by_name_and_leave_the_connection_with_tuples(tmp_path: Path) -> None:
    conn = statedb.connect(tmp_path / "state.sqlite3")
    try:
        conn.execute("INSERT INTO account_status (account, collected) VALUES ('sammel', 3)")
        row = statedb.named_rows(conn, "SELECT collected, account FROM account_status WHERE account=?", ("sammel",))[0]
        assert (row["account"], row["collected"]) == ("sammel", 3)
        assert conn.execute("SELECT account FROM account_status").fetchone() == ("sammel",)
    finally:
        conn.close()


def test_a_batch_is_committed_whole_or_not_at_all(tmp_path: Path) -> None:
    conn = statedb.connect(tmp_path / "state.sqlite3")
    try:
        statedb.run_batch(conn, [
            ("INSERT INTO ledger (digest, rcpt, at) VALUES (?, ?, ?)", [("d", "a", 1.0), ("d", "b", 1.0)], True),
            ("INSERT INTO ledger (digest, rcpt, at) VALUES (?, ?, ?)", [], True),  # nothing to insert: skipped
            ("INSERT INTO ledger (digest, rcpt, at) VALUES (?, ?, ?)", ("e", "a", 1.0), False),
        ])
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 3
        with pytest.raises(sqlite3.IntegrityError):
            statedb.run_batch(conn, [
                ("INSERT INTO ledger (digest, rcpt, at) VALUES (?, ?, ?)", ("f", "a", 1.0), False),
                ("INSERT INTO ledger (digest, rcpt, at) VALUES (?, ?, ?)", ("d", "a", 1.0), False),  # a duplicate
            ])
        assert not conn.in_transaction
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 3  # f rolled back with it
    finally:
        conn.close()
