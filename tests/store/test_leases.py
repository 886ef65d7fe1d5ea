"""Leases with fencing tokens and instance heartbeats (runwatch/store/postgres/leases.py and
sqlite/leases.py), against a real PostgreSQL and a real state file.

What several instances rely on is PostgreSQL's alone (one holder wins, expiry on the database's clock, a
holder paused past its lease is refused); what both stores promise (tokens that only grow, renewal with
the right token only, heartbeats) runs against both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from runwatch.clock import Clock, ManualClock
from runwatch.errors import StateError
from runwatch.store import State
from runwatch.store.postgres.leases import PostgresLeases
from runwatch.store.sqlite.leases import SqliteLeases
from tests.postgres import PASSWORD, PASSWORD_ROLE, Cluster

FENCE_SQL = (
    "SELECT 1 FROM runwatch_leases WHERE name=%s AND holder=%s AND token=%s"
    " AND expires_at > extract(epoch from clock_timestamp()) FOR SHARE"
)


@pytest.fixture
def opened() -> Iterator[list[PostgresLeases | SqliteLeases]]:
    made: list[PostgresLeases | SqliteLeases] = []
    yield made
    for x in made:
        x.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, opened: list[PostgresLeases | SqliteLeases]
) -> Callable[..., PostgresLeases | SqliteLeases]:
    """A factory of connections to one store (each call: another process's view, or a restart)."""
    if request.param == "sqlite":
        State(tmp_path).close()  # a state file, as the daemon leaves it

        def sqlite(clock: Clock | None = None) -> SqliteLeases:
            opened.append(SqliteLeases(tmp_path / "runwatch.sqlite3", clock))
            return opened[-1]

        return sqlite
    url: str = request.getfixturevalue("pg_url")

    def postgres(clock: Clock | None = None) -> PostgresLeases:
        opened.append(PostgresLeases(url, clock=clock))
        return opened[-1]

    return postgres


@pytest.fixture
def pg(pg_url: str, opened: list[PostgresLeases | SqliteLeases]) -> Callable[[], PostgresLeases]:
    def make() -> PostgresLeases:
        opened.append(PostgresLeases(pg_url))
        return opened[-1]

    return make


def db_now(url: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extract(epoch from clock_timestamp())::double precision").fetchone()
        assert row is not None
        return float(row[0])


def wait_until_run_out(leases: PostgresLeases, name: str, timeout: float = 10.0) -> None:
    """The database says the lease ran out (nothing announces it: ask it, a few times a second)."""
    deadline = time.monotonic() + timeout
    while any(x.held for x in leases.leases() if x.name == name):
        assert time.monotonic() < deadline, f"{name} still held after {timeout} s"
        time.sleep(0.05)


# -- both stores ------------------------------------------------------------------------------------
def test_tokens_only_grow_across_holders_and_restarts(
    store: Callable[..., PostgresLeases | SqliteLeases],
) -> None:
    a = store()
    t1 = a.acquire("poll:exa", "a", 30)
    assert t1 is not None
    a.release("poll:exa", "a", t1)
    b = store()
    t2 = b.acquire("poll:exa", "b", 30)
    assert t2 is not None and t2 > t1
    b.release("poll:exa", "b", t2)
    b.close()
    again = store()  # a restart of the first
    t3 = again.acquire("poll:exa", "a", 30)
    assert t3 is not None and t3 > t2
    assert again.acquire("poll:olostep", "a", 30) == 1  # each lease counts on its own


def test_renewal_needs_the_holder_and_its_token(store: Callable[..., PostgresLeases | SqliteLeases]) -> None:
    leases = store()
    token = leases.acquire("poll:exa", "a", 30)
    assert token is not None
    assert leases.renew("poll:exa", "a", token, 30)
    assert not leases.renew("poll:exa", "a", token - 1, 30)
    assert not leases.renew("poll:exa", "b", token, 30)
    assert not leases.renew("poll:olostep", "a", token, 30)


def test_who_holds_what_and_since_when(store: Callable[..., PostgresLeases | SqliteLeases]) -> None:
    clock = ManualClock(time.time())
    leases = store(clock)
    before = clock.now()
    token = leases.acquire("poll:exa", "runwatch-a", 30)
    assert token is not None
    clock.advance(5)
    assert leases.renew("poll:exa", "runwatch-a", token, 30)
    [held] = leases.leases()
    assert (held.name, held.holder, held.token, held.held) == ("poll:exa", "runwatch-a", token, True)
    assert (held.acquired_at, held.expires_at) == (before, before + 35)  # since: the taking, not the renewal
    leases.release("poll:exa", "runwatch-a", token)
    [released] = leases.leases()
    assert not released.held and released.token == token


def test_heartbeats_say_who_lives_with_which_config(
    store: Callable[..., PostgresLeases | SqliteLeases],
) -> None:
    a, b = store(), store()
    a.heartbeat("runwatch-a", "d1", {"exa": 1_780_000_000.5})
    b.heartbeat("runwatch-b", "d2", {})
    a.heartbeat("runwatch-a", "d1", {"exa": 1_780_000_001.5, "olostep": 1_780_000_002.0})
    seen = a.instances()
    assert [(i.name, i.digest) for i in seen] == [("runwatch-a", "d1"), ("runwatch-b", "d2")]
    assert dict(seen[0].polls) == {"exa": 1_780_000_001.5, "olostep": 1_780_000_002.0}
    assert seen[0].age < seen[1].age < 5


# -- SQLite: one instance ---------------------------------------------------------------------------
def test_sqlite_is_always_the_leader_yet_its_token_grows(tmp_path: Path) -> None:
    State(tmp_path).close()
    clock = ManualClock()
    leases = SqliteLeases(tmp_path / "runwatch.sqlite3", clock)
    try:
        first = leases.acquire("poll:exa", "a", 15)
        # Killed (-9) and started again at once: the lease it held in its last life has not run out,
        # yet the state directory's lock says this is the only runwatch: it leads, with a new token.
        second = leases.acquire("poll:exa", "a", 15)
        assert first is not None and second is not None and second > first
        assert not leases.shared
        clock.advance(60)  # its own clock drives the times status shows
        assert not leases.leases()[0].held
    finally:
        leases.close()


def test_status_reads_a_state_no_daemon_of_this_version_wrote(tmp_path: Path) -> None:
    State(tmp_path).close()
    leases = SqliteLeases(tmp_path / "runwatch.sqlite3", create=False)
    try:
        assert leases.leases() == [] and leases.instances() == []
    finally:
        leases.close()


# -- PostgreSQL: several instances ------------------------------------------------------------------
def ask_together(name: str, askers: list[tuple[PostgresLeases, str]]) -> dict[str, int | None]:
    """Each (connection, holder) asks for the lease ``name`` at the same moment, in threads."""
    start = threading.Barrier(len(askers))
    got: dict[str, int | None] = {}

    def ask(leases: PostgresLeases, holder: str) -> None:
        start.wait()
        got[holder] = leases.acquire(name, holder, 30)

    threads = [threading.Thread(target=ask, args=pair) for pair in askers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_of_two_holders_asking_at_once_one_wins(pg: Callable[[], PostgresLeases]) -> None:
    a, b = pg(), pg()
    for round_ in range(20):
        name = f"poll:p{round_}"
        got = ask_together(name, [(a, "a"), (b, "b")])
        winners = [h for h, token in got.items() if token is not None]
        assert len(winners) == 1, got
        [lease] = [x for x in a.leases() if x.name == name]
        assert lease.holder == winners[0]
        # While it is held, the other one (or the winner itself, under a new token) cannot take it.
        assert a.acquire(name, "a", 30) is None and b.acquire(name, "b", 30) is None


def test_expiry_is_on_the_database_clock(pg: Callable[[], PostgresLeases], pg_url: str) -> None:
    a, b = pg(), pg()
    before = db_now(pg_url)
    token = a.acquire("poll:exa", "a", 0.5)
    after = db_now(pg_url)
    assert token is not None
    [lease] = a.leases()
    assert before <= lease.acquired_at <= after and lease.expires_at == pytest.approx(lease.acquired_at + 0.5)
    assert b.acquire("poll:exa", "b", 30) is None
    wait_until_run_out(b, "poll:exa")
    assert db_now(pg_url) >= lease.expires_at
    taken = b.acquire("poll:exa", "b", 30)
    assert taken == token + 1


def test_renewal_after_expiry_fails_even_if_nobody_took_it(pg: Callable[[], PostgresLeases]) -> None:
    a = pg()
    token = a.acquire("poll:exa", "a", 0.3)
    assert token is not None
    wait_until_run_out(a, "poll:exa")
    assert not a.renew("poll:exa", "a", token, 30)
    # Taking it afresh is a new holding: a new token, so writes under the old one stay refused.
    again = a.acquire("poll:exa", "a", 30)
    assert again == token + 1


def test_a_holder_paused_past_its_lease_is_refused_when_it_resumes(
    pg: Callable[[], PostgresLeases], pg_url: str
) -> None:
    paused, standby = pg(), pg()
    old = paused.acquire("poll:exa", "runwatch-a", 0.3)
    assert old is not None
    # runwatch-a stops (SIGSTOP) and renews no more; the lease runs out; runwatch-b takes it.
    wait_until_run_out(standby, "poll:exa")
    new = standby.acquire("poll:exa", "runwatch-b", 30)
    assert new is not None and new > old
    # runwatch-a wakes (SIGCONT): its renewal is refused, its release releases nothing of b's, and a
    # write fenced with its token finds no lease (the check the store's writes make).
    assert not paused.renew("poll:exa", "runwatch-a", old, 30)
    paused.release("poll:exa", "runwatch-a", old)
    [lease] = standby.leases()
    assert (lease.holder, lease.token, lease.held) == ("runwatch-b", new, True)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(FENCE_SQL, ("poll:exa", "runwatch-a", old)).fetchall() == []
        assert conn.execute(FENCE_SQL, ("poll:exa", "runwatch-b", new)).fetchall() == [(1,)]
    assert paused.acquire("poll:exa", "runwatch-a", 30) is None


def test_the_tables_are_made_once_by_instances_starting_together(pg_url: str) -> None:
    errors: list[BaseException] = []
    made: list[PostgresLeases] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            made.append(PostgresLeases(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x in made:
        x.close()
    assert errors == [] and len(made) == 4
    with psycopg.connect(pg_url) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'runwatch_leases' ORDER BY ordinal_position"
        ).fetchall()
    assert cols == [
        ("name", "text"), ("holder", "text"), ("token", "bigint"),
        ("acquired_at", "double precision"), ("expires_at", "double precision"),
    ]  # fmt: skip


def test_errors_name_the_database_never_the_password(postgres: Cluster) -> None:
    wrong = postgres.url("postgres", role=PASSWORD_ROLE, password=PASSWORD + "-wrong")
    with pytest.raises(StateError) as refused:
        PostgresLeases(wrong)
    text = str(refused.value)
    assert f"{postgres.host}:{postgres.port}/postgres" in text and "authentication failed" in text
    assert PASSWORD not in text and "\n" not in text
    with pytest.raises(StateError) as missing:
        PostgresLeases(postgres.url("no_such_database"))
    assert "no_such_database" in str(missing.value) and "does not exist" in str(missing.value)


def test_a_restarted_database_is_used_again_on_the_next_call(postgres: Cluster, pg_url: str) -> None:
    leases = PostgresLeases(pg_url)
    try:
        token = leases.acquire("poll:exa", "a", 30)
        assert token is not None
        postgres.stop("fast")
        try:
            with pytest.raises(StateError):
                leases.renew("poll:exa", "a", token, 30)
        finally:
            postgres.start()
        assert leases.renew("poll:exa", "a", token, 30)
    finally:
        leases.close()
