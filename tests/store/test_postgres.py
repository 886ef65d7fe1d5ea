"""The PostgreSQL store's own behaviour, against a real server: its schema made and migrated once
however many instances start together, a newer schema refused, claims that skip what another sender
holds, and every way of not reaching the database as one line naming it (never its password)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from runwatch.errors import StateError, StateTooNewError, StateUnavailableError
from runwatch.model import RunSnapshot
from runwatch.store import Location, Notification, StuckMark, copy_state, describe, open_leases, open_state
from runwatch.store.postgres import SCHEMA_VERSION
from runwatch.store.postgres.schema import MIGRATIONS, TABLES
from tests.conftest import make_alert
from tests.postgres import PASSWORD, PASSWORD_ROLE, Cluster
from tests.tools import free_port


def test_an_empty_database_is_a_valid_start_and_instances_starting_together_migrate_once(
    tmp_path: Path, pg_url: str
) -> None:
    where = Location(tmp_path, pg_url)
    assert describe(where) is not None and "no runwatch schema yet" in str(describe(where))
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def instance() -> None:
        start.wait()
        try:  # each instance has its own state_dir (its host's), all share the database
            open_state(Location(tmp_path / threading.current_thread().name, pg_url)).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=instance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        found = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        version = conn.execute("SELECT value FROM runwatch_meta WHERE key = 'schema_version'").fetchall()
    assert found == set(TABLES)
    assert version == [(str(SCHEMA_VERSION),)]
    assert f"schema {SCHEMA_VERSION}" in str(describe(where))


def test_a_schema_newer_than_this_runwatch_is_refused_in_one_line_and_left_alone(
    tmp_path: Path, pg_url: str, postgres: Cluster
) -> None:
    where = Location(tmp_path, pg_url)
    open_state(where).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE runwatch_meta SET value = '99' WHERE key = 'schema_version'")
    for attempt in (lambda: open_state(where), lambda: describe(where)):
        with pytest.raises(StateTooNewError) as caught:
            attempt()
        text = str(caught.value)
        assert "\n" not in text and "newer runwatch (schema 99 > " in text
        assert f"{postgres.host}:{postgres.port}/{pg_url.rsplit('/', 1)[1]}" in text
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM runwatch_meta WHERE key = 'schema_version'").fetchone() == (
            "99",
        )


def test_a_claim_skips_rows_another_sender_is_claiming_instead_of_waiting(
    tmp_path: Path, pg_url: str
) -> None:
    state = open_state(Location(tmp_path, pg_url))
    try:
        state.record("exa", [], [Notification(make_alert(i)) for i in range(4)], 1.0)
        with psycopg.connect(pg_url) as other, other.transaction():  # a claim in flight elsewhere
            other.execute("SELECT seq FROM runwatch_notifications ORDER BY seq LIMIT 2 FOR UPDATE").fetchall()
            began = time.monotonic()
            got = state.outbox.claim("ch", 2.0, 10, "me", 60)
            assert time.monotonic() - began < 2
        assert [c.alert.run_id for c in got] == ["run_2", "run_3"]
    finally:
        state.close()


def one_line_naming(exc: BaseException, host: str, port: int, database: str) -> str:
    text = str(exc)
    assert "\n" not in text
    assert f"{host}:{port}/{database}" in text, text
    return text


def test_unreachable_refused_login_and_missing_database_are_one_line_each(
    tmp_path: Path, postgres: Cluster, pg_url: str
) -> None:
    db = pg_url.rsplit("/", 1)[1]
    closed = free_port()
    cases: list[tuple[str, type[StateError], str, int, str]] = [
        (f"postgresql://runwatch@127.0.0.1:{closed}/runwatch", StateUnavailableError, "is unreachable",
         closed, "runwatch"),
        (postgres.url(db, role=PASSWORD_ROLE, password="wrong-Pa55word-xyz"), StateError, "refused the login",
         postgres.port, db),
        (postgres.url("no_such_db"), StateError, "does not exist", postgres.port, "no_such_db"),
    ]  # fmt: skip
    for url, kind, words, port, database in cases:
        where = Location(tmp_path, url)
        for attempt in (open_state, describe):
            with pytest.raises(kind) as caught:
                attempt(where)
            text = one_line_naming(caught.value, "127.0.0.1", port, database)
            assert words in text
            assert "wrong-Pa55word-xyz" not in text and PASSWORD not in text


@pytest.mark.parametrize("how", ["url", "credential", "PGPASSWORD"])
def test_the_password_may_come_from_the_url_a_credential_or_libpq_and_is_never_shown(
    tmp_path: Path, postgres: Cluster, pg_url: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pg_url.rsplit("/", 1)[1]
    url = postgres.url(db, role=PASSWORD_ROLE, password=PASSWORD if how == "url" else None)
    if how == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
    where = Location(tmp_path, url, PASSWORD if how == "credential" else None)
    state = open_state(where)
    try:
        assert state.where == f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres.port}/{db}"
        assert PASSWORD not in str(describe(where))
    finally:
        state.close()


def test_a_schema_1_database_and_one_the_leases_made_alone_are_migrated_in_place(
    tmp_path: Path, postgres: Cluster
) -> None:
    """Schema 1 (the store's first) had no creation times, stuck marks or heartbeats; the leadership's
    first release made its two tables by itself, before the schema owned them. Both upgrade."""
    old = postgres.url(postgres.create_database())
    with psycopg.connect(old, autocommit=True) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO runwatch_meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO runwatch_runs VALUES ('exa', 'r1', 'm1', 'running', false, 42.0)")
    leases_only = postgres.url(postgres.create_database())
    with psycopg.connect(leases_only, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE runwatch_leases (name text PRIMARY KEY, holder text NOT NULL,"
            " token bigint NOT NULL, acquired_at double precision, expires_at double precision)"
        )
        conn.execute("INSERT INTO runwatch_leases VALUES ('poll:exa', 'runwatch-a', 7, 1.0, 2.0)")
        conn.execute(
            "CREATE TABLE runwatch_instances (name text PRIMARY KEY, last_seen double precision NOT NULL,"
            " digest text NOT NULL, polls jsonb NOT NULL DEFAULT '{}')"
        )
    state = open_state(Location(tmp_path / "a", old))
    try:
        rec = state.runs.run("exa", "r1")
        assert rec is not None and rec.created_at == 42.0  # counted from its last record until a poll says
        state.record("exa", [], [], 50.0, stuck=[StuckMark("exa", "r1", (30.0,))])
        assert f"schema {SCHEMA_VERSION}" in str(describe(Location(tmp_path, old)))
    finally:
        state.close()
    again = open_state(Location(tmp_path / "a", old))
    try:
        rec = again.runs.run("exa", "r1")
        assert rec is not None and rec.stuck == {30.0}
    finally:
        again.close()
    leases = open_leases(Location(tmp_path / "b", leases_only))
    try:
        assert leases.acquire("poll:exa", "runwatch-b", 30) == 8  # the token goes on growing
    finally:
        leases.close()
    with psycopg.connect(leases_only) as conn:
        found = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert found == set(TABLES)


def test_state_copy_carries_creation_times_and_stuck_marks(tmp_path: Path, pg_url: str) -> None:
    sqlite = open_state(Location(tmp_path))
    live = RunSnapshot("exa", "m1", "live", "running", {}, created_at=40.0)
    sqlite.record("exa", [live], [], 100.0, monitor_id="m1")
    sqlite.record("exa", [], [], 110.0, stuck=[StuckMark("exa", "live", (60.0, 120.0))])
    sqlite.close()
    copied = copy_state(tmp_path, Location(tmp_path, pg_url))
    assert (copied["runs"], copied["run_stuck"]) == (1, 2)
    state = open_state(Location(tmp_path / "pg", pg_url))
    try:
        rec = state.runs.run("exa", "live")
        assert rec is not None and (rec.created_at, rec.stuck) == (40.0, {60.0, 120.0})
    finally:
        state.close()
