"""A real PostgreSQL for the tests: a throwaway cluster per test session, a fresh database per test.

Never a mock. Debian's ``postgresql`` package is installed when missing (tests/system_tools.py), and the
cluster is made with ``initdb`` in a temporary folder and started with ``pg_ctl`` on a free loopback
port, with its socket in that folder: the packaged cluster (``15-main`` on 5432), if any, is neither
used nor disturbed. ``initdb`` and ``postgres`` refuse to run as root, so as root they run as the
``postgres`` system user (``runuser``) on a folder that user owns.

Authentication: ``trust`` for every role on loopback, except the role :data:`PASSWORD_ROLE`, which
must give :data:`PASSWORD` (scram-sha-256), so tests can check refused logins and password masking.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system_tools import install
from tests.tools import free_port

#: A role that logs in only with its password (the others are trusted on loopback).
PASSWORD_ROLE = "runwatch_pw"
PASSWORD = "pg-S3cret-Pa55word"
#: The role the tests' own URLs use (trusted): a superuser, so it may create databases.
ROLE = "runwatch"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian keeps them off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class Cluster:
    """A running throwaway cluster: where it listens, and how to make databases in it."""

    host: str
    port: int
    folder: Path
    bin: Path
    as_user: list[str]

    def url(self, database: str = "postgres", *, role: str = ROLE, password: str | None = None) -> str:
        auth = f"{role}:{password}" if password is not None else role
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql,
             self.url(database)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def pg_ctl(self, *args: str) -> None:
        data = str(self.folder / "data")
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", data, *args], check=True,
                       capture_output=True, text=True)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")

    def start(self) -> None:
        log = str(self.folder / "postgres.log")
        self.pg_ctl("-l", log, "-w", "-t", "60", "start")


def _start_cluster() -> Iterator[Cluster]:
    install("postgresql", present=pg_bin)
    binaries = pg_bin()
    assert binaries is not None, "PostgreSQL was installed, yet no /usr/lib/postgresql/*/bin/initdb"
    folder = Path(tempfile.mkdtemp(prefix="runwatch-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(folder, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    subprocess.run(
        [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "-A", "trust", "-E", "UTF8",
         "--no-sync"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    conf = (
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{folder}'\n"
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        "password_encryption = 'scram-sha-256'\n"
    )
    hba = (
        "local all all trust\n"
        f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1/32 trust\n"
    )
    write = [*as_user, "tee", "-a", str(data / "postgresql.conf")]
    subprocess.run(write, input=conf, check=True, capture_output=True, text=True)
    subprocess.run([*as_user, "tee", str(data / "pg_hba.conf")], input=hba, check=True, capture_output=True,
                   text=True)  # fmt: skip
    cluster = Cluster("127.0.0.1", port, folder, binaries, as_user)
    cluster.start()
    try:
        cluster.psql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """The session's cluster, started on first use."""
    yield from _start_cluster()


@pytest.fixture
def pg_url(postgres: Cluster) -> str:
    """A URL to a fresh, empty database of the session's cluster (the trusted role, no password)."""
    return postgres.url(postgres.create_database())


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest) -> str | None:
    """A test run on each store: None (SQLite in ``state_dir``), then a fresh PostgreSQL database's URL
    (for ``state: {url: ...}``)."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """A cluster of this test's own, for a test that stops and starts it (the session's is shared by
    every test of the xdist worker, so stopping that one would fail them)."""
    yield from _start_cluster()
