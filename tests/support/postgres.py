"""PostgreSQL for the store tests: a fresh database on the shared server, or a private server.

* :func:`shared_database` creates a uniquely named database on the PostgreSQL at
  ``$CAROBAMA_TEST_PG`` (default ``127.0.0.1:5432``, user ``postgres``, trust auth) and drops it
  afterwards. :func:`shared_server_problem` says why that server cannot be used (tests skip with it).
* :class:`ThrowawayPostgres` runs a server of its own (``initdb`` + ``pg_ctl`` from
  ``/usr/lib/postgresql/*/bin``, as the ``postgres`` user when the tests run as root) on a free
  loopback port, so that a test can really take the database away and bring it back.

Every wait has a deadline.
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
from pathlib import Path

from tests.support.processes import free_port

SHARED = os.environ.get("CAROBAMA_TEST_PG", "127.0.0.1:5432")
SHARED_HOST, _, SHARED_PORT = SHARED.partition(":")
ADMIN_DB = os.environ.get("CAROBAMA_TEST_PG_DB", "test")


def url_for(database: str, host: str = SHARED_HOST, port: int | str = SHARED_PORT) -> str:
    """SQLAlchemy URL of ``database`` as user postgres."""
    return f"postgresql+psycopg://postgres@{host}:{port}/{database}"


def _connect(database: str = ADMIN_DB, host: str = SHARED_HOST, port: int | str = SHARED_PORT,
             timeout: int = 3):
    import psycopg

    return psycopg.connect(host=host, port=int(port), user="postgres", dbname=database,
                           connect_timeout=timeout, autocommit=True)


def shared_server_problem() -> str | None:
    """None when the shared PostgreSQL answers, else why not (the skip reason)."""
    try:
        with _connect() as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        return (f"PostgreSQL not reachable at {SHARED} (user postgres, database {ADMIN_DB}): "
                f"{' '.join(str(error).split())[:200]}")
    return None


@contextlib.contextmanager
def shared_database(prefix: str = "carobama_test") -> Iterator[str]:
    """A new, empty database on the shared server; yields its URL; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for(name)
    finally:
        with _connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def throwaway_problem() -> str | None:
    """None when :class:`ThrowawayPostgres` can run here, else why not."""
    if postgres_bin() is None:
        return "initdb/pg_ctl not found (install the postgresql server package)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run a server as"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


class ThrowawayPostgres:
    """A private PostgreSQL server on 127.0.0.1:<free port> (trust auth, user postgres)."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        assert self.bin is not None
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="carobama-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self.sockets.mkdir()
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--no-sync"], timeout=120)

    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-800:]}"
                               f"\n{self.log_tail()}")
        return result

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                   "start"], timeout=90)

    def stop(self, mode: str = "immediate") -> None:
        """Take the server away (``immediate``: like a crash; connections are cut at once)."""
        self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], timeout=90)

    def create_database(self, name: str = "carobama") -> str:
        """Create a database; returns its SQLAlchemy URL."""
        with _connect("postgres", "127.0.0.1", self.port) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return url_for(name, "127.0.0.1", self.port)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log (for failure reports)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the server if it runs and delete its files."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresCloser:
    """Stops and deletes a private PostgreSQL server at the end of a test (for a list of
    processes whose ``stop()`` is called at teardown)."""

    def __init__(self, pg: ThrowawayPostgres):
        self.pg = pg

    def stop(self) -> None:
        """Stop the server and delete its files."""
        self.pg.close()


def private_database(started: list) -> tuple[ThrowawayPostgres, str]:
    """A private server, started, with an empty database; returns it and the database URL. Its
    closer is appended to ``started``; the test is skipped (with the reason) when none can run."""
    import pytest

    problem = throwaway_problem()
    if problem:
        pytest.skip(f"cannot run a private PostgreSQL server: {problem}")
    pg = ThrowawayPostgres()
    started.append(PostgresCloser(pg))
    pg.start()
    return pg, pg.create_database()
