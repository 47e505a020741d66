"""Database engines and schema migrations.

Users give one URL (`sqlite:///hitl.db`, `postgresql://user@host/db`); the request path uses its async
driver, migrations and the CLI's one-off work use the sync one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import create_engine as create_engine_sync
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState
from sqlmodel.ext.asyncio.session import AsyncSession

if TYPE_CHECKING:
    from alembic.config import Config

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.set(drivername=drivers[backend])


def async_url(url: str) -> URL:
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> URL:
    return _with_driver(url, _SYNC_DRIVERS)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the console read while the gateway writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_reset(dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
    """A connection back in the pool is rolled back only when a transaction is still open on it: after a commit,
    the pool's own unconditional rollback would cost one more trip to aiosqlite's thread for nothing."""
    driver = record.driver_connection
    if state.asyncio_safe and not state.terminate_only and driver is not None and driver.in_transaction:
        dbapi_connection.rollback()


def _configure(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "reset", _sqlite_reset)


def _to_json(value: Any) -> str:
    # orjson writes the stored bodies (up to ~85 KB of logprobs) several times faster than json; the stored
    # text is never what a client receives, so its float spelling does not matter.
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def create_engine(url: str) -> AsyncEngine:
    kwargs: dict[str, Any] = {"json_serializer": _to_json, "json_deserializer": orjson.loads}
    if is_postgres(url):
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
    else:
        # SQLite takes one writer at a time: with several connections, concurrent commits wait in SQLite's busy
        # handler, which sleeps in steps of up to 100 ms (p99 of seconds under load). One connection queues
        # them in the event loop instead, in order, with no sleeping.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60, pool_reset_on_return=None)  # _sqlite_reset
    engine = create_async_engine(async_url(url), **kwargs)
    _configure(engine.sync_engine)
    return engine


READERS = 4  # SQLite connections that only read, for the team lead's figures
# How much of the file the readers map into memory: a figure over a week reads its pages straight from the OS's
# cache instead of copying each through a read() call (half the time of a join over a week's reviews). Address
# space only; the pages are the OS cache's, shared by the readers.
READER_MMAP_BYTES = 1 << 30


def _read_only(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
    cursor.close()


def create_reader(url: str, engine: AsyncEngine) -> AsyncEngine:
    """Where long reads (the Insights figures over a whole period) run: on PostgreSQL the engine itself (its pool
    has room); on SQLite an engine of its own whose connections may only read, so those reads never hold the one
    connection the gateway writes through (WAL lets readers and the writer go on at once), and several run at once
    in their own threads."""
    if is_postgres(url) or make_url(url).database in (None, "", ":memory:"):
        return engine  # an in-memory database is its one connection's alone
    reader = create_async_engine(
        async_url(url), json_deserializer=orjson.loads, pool_size=READERS, max_overflow=0, pool_timeout=60
    )
    _configure(reader.sync_engine)
    event.listen(reader.sync_engine, "connect", _read_only)
    return reader


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # alembic is a fifth of the app's import time; serving never migrates

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    # ConfigParser interpolates %, which URL-encoded passwords contain.
    rendered = sync_url(url).render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", rendered)
    return config


def upgrade(url: str) -> None:
    """Bring the schema up to the newest migration."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def refresh_statistics(url: str) -> None:
    """On SQLite, gather the query planner's statistics (PostgreSQL's autovacuum keeps its own): without them
    the insights over a million exchanges take twice as long. It reads the indexes whole: half a second at a
    million exchanges (a sample was too coarse to help), so `hitl serve` runs it once as it starts, not every
    command."""
    if make_url(url).get_backend_name() != "sqlite":
        return
    engine = create_engine_sync(sync_url(url))
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()


@functools.cache
def head_revision() -> str | None:
    """The newest migration this code ships (read once: the files do not change while it runs)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return ScriptDirectory.from_config(config).get_current_head()


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at (None before the first)."""
    async with engine.connect() as connection:
        found = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return found.scalar_one_or_none()
