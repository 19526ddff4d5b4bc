"""Database URLs, engines and migrations of the store.

Only SQLite and PostgreSQL (psycopg 3: ``postgresql+psycopg://``) are supported. SQLite files are
opened in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the process being
killed, and readers (``carobama-export``) never block the writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

__all__ = [
    "DEFAULT_FILENAME",
    "StoreURLError",
    "current_revision",
    "display_url",
    "head_revision",
    "make_engine",
    "parse_url",
    "upgrade",
]

#: SQLite file name used when no ``--database`` is given.
DEFAULT_FILENAME = "carobama.sqlite"
#: PostgreSQL advisory lock taken while migrating (two services starting together wait in turn).
_MIGRATION_LOCK = 0x6361726F  # "caro"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StoreURLError(ValueError):
    """The database URL is not usable (syntax, unsupported database or missing driver)."""


def parse_url(value: str) -> URL:
    """Parse and check a store URL; raises :class:`StoreURLError` with a one-line reason."""
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise StoreURLError(
            f"--database must be an SQLAlchemy URL such as sqlite:///carobama.sqlite or "
            f"postgresql+psycopg://user@host/db (or none), not {value!r}") from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreURLError(f"--database: only sqlite and postgresql are supported, not {backend!r}")
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise StoreURLError("--database: an SQLite store needs a file, e.g. sqlite:///carobama.sqlite")
    try:
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except NoSuchModuleError:
        raise StoreURLError(f"--database: unknown database driver {url.drivername!r} "
                            f"(use sqlite or postgresql+psycopg)") from None
    except ImportError as error:
        raise StoreURLError(f"--database: the driver for {url.drivername!r} is not installed "
                            f"({getattr(error, 'name', None) or error})") from None
    if getattr(dialect, "is_async", False):
        raise StoreURLError(f"--database: {url.drivername!r} is an asyncio driver; use postgresql+psycopg")
    return url


def display_url(url: str | URL) -> str:
    """The URL for log lines: the password is never shown."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database url>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling (implicit BEGIN before DML only) breaks SAVEPOINTs;
    # SQLAlchemy's documented remedy: autocommit at the driver, BEGIN emitted on "begin" below.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def make_engine(url: str | URL, *, connect_timeout: float = 5.0, create_folder: bool = True,
                writer: bool = False) -> Engine:
    """An engine for the store; nothing is connected yet.

    Raises :class:`StoreURLError` for an unusable URL or a missing database driver. For SQLite the
    file's folder is created when missing (unless ``create_folder`` is false), and a ``writer``
    engine begins its transactions with ``BEGIN IMMEDIATE`` (it takes the write lock at once, so
    that another process writing the same file makes it wait ``busy_timeout`` rather than fail).
    """
    parsed = parse_url(str(url)) if not isinstance(url, URL) else url
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "postgresql":
        options["connect_args"] = {"connect_timeout": max(1, round(connect_timeout))}
        options["pool_size"] = 2
    try:
        engine = create_engine(parsed, **options)
    except ModuleNotFoundError as error:
        raise StoreURLError(f"--database: the driver for {parsed.drivername!r} is not installed "
                            f"({error.name})") from None
    except (ArgumentError, ValueError) as error:
        raise StoreURLError(f"--database: {error}") from None
    if backend == "sqlite":
        if create_folder:
            Path(parsed.database or DEFAULT_FILENAME).expanduser().absolute().parent.mkdir(
                parents=True, exist_ok=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
    return engine


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` (the latest by default), in one transaction.

    On PostgreSQL an advisory lock serialises services that migrate the same database at once.
    """
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        command.upgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision of the database (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    from livetiming.service.plugins.carobama.store.schema import VERSION_TABLE

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head_revision() -> str:
    """The newest revision the shipped migrations know."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
