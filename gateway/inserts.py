"""One row written and committed, durable when the call returns, at the least cost each database allows.

The release path writes one row per request (the exchange) and the client waits for its commit. Through a
session that costs a transaction's worth of round trips and SQLAlchemy's own work around each statement: on
PostgreSQL a ping when the pool hands the connection out, BEGIN, INSERT and COMMIT, about 1.7 ms of CPU per row
where psycopg alone spends 0.5 ms; on SQLite four trips to aiosqlite's thread (cursor, execute, cursor close,
commit), each a hand-over of the GIL, which under load cost more CPU than the write itself. Here PostgreSQL runs
the INSERT alone, in autocommit, on psycopg's own connections, and SQLite runs the INSERT and its commit in one
trip. The row is the same bytes either way: the statement is SQLAlchemy's own, compiled once, and each value
goes through its column type's own bind processor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

# A released request holds a connection for one INSERT (a few milliseconds): ten serve hundreds a second.
POOL_SIZE = 10


@dataclass(frozen=True)
class _Statement:
    sql: str
    names: tuple[str, ...]  # the parameters' names; in order where the driver takes them by position (SQLite)
    processors: tuple[Callable[[Any], Any] | None, ...]
    compiled: Compiled

    def values(self, row: dict[str, Any]) -> list[Any]:
        given = self.compiled.construct_params(row)
        assert given is not None
        return [
            process(given[name]) if process else given[name]
            for name, process in zip(self.names, self.processors, strict=True)
        ]


@lru_cache(maxsize=32)
def _compiled(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Statement:
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or compiled.binds)
    processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    return _Statement(compiled.string, names, processors, compiled)


class Inserts:
    """Writes one row and commits it; a failed INSERT leaves nothing behind. Made with `opened()`."""

    def __init__(self, engine: AsyncEngine, pool: AsyncConnectionPool | None) -> None:
        self._engine = engine
        self._pool = pool  # PostgreSQL's connections for these INSERTs; None on SQLite

    async def one(self, table: Table, row: dict[str, Any]) -> None:
        statement = _compiled(table, tuple(row), self._engine.dialect)
        if self._pool is None:
            await self._sqlite(statement.sql, tuple(statement.values(row)))
        else:
            parameters = dict(zip(statement.names, statement.values(row), strict=True))
            await self._postgresql(self._pool, table, statement.sql, parameters)

    async def _sqlite(self, sql: str, parameters: tuple[Any, ...]) -> None:
        def write(connection: sqlite3.Connection) -> None:
            try:
                connection.execute(sql, parameters)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

        # The pool's connection itself, without SQLAlchemy's Connection around it (a third of the checkout's CPU).
        raw = await self._engine.raw_connection()
        try:
            driver = raw.driver_connection  # aiosqlite's connection: its thread owns the sqlite3 one
            assert driver is not None
            # aiosqlite (pinned) runs each call it is given in its thread, one after the other: the INSERT and the
            # commit go in one call instead of four.
            await driver._execute(write, driver._conn)
        except sqlite3.Error as exc:  # raised as SQLAlchemy raises it (IntegrityError, OperationalError, ...)
            raise DBAPIError.instance(sql, parameters, exc, sqlite3.Error) from exc
        finally:
            raw.close()  # back to the pool with no transaction open: nothing to roll back (db._sqlite_reset)

    async def _postgresql(self, pool: AsyncConnectionPool, table: Table, sql: str, parameters: dict[str, Any]) -> None:
        # No ping before each INSERT (SQLAlchemy's pool pings every connection it hands out, a round trip per
        # request): a connection the server dropped while it sat in the pool (a restart, an idle timeout) fails
        # its INSERT, and the INSERT runs once more on a live one.
        try:
            if await _written(pool, sql, parameters):
                return
            await pool.check()  # the connections idle beside it are likely as dead: replace them all
            try:
                if await _written(pool, sql, parameters):
                    return
                raise psycopg.OperationalError("the connection to PostgreSQL was lost twice in a row")
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == (table.primary_key.name or f"{table.name}_pkey"):  # PostgreSQL's name
                    return  # the first try committed before its connection was lost: the row is there, once
                raise
        except psycopg.Error as exc:  # raised as SQLAlchemy raises it (IntegrityError, OperationalError, ...)
            raise DBAPIError.instance(sql, parameters, exc, psycopg.Error) from exc


async def _written(pool: AsyncConnectionPool, sql: str, parameters: dict[str, Any]) -> bool:
    """Run the INSERT; False when its connection turned out to be lost (the pool then discards it)."""
    async with pool.connection() as connection:
        try:
            await connection.execute(sql, parameters)
        except psycopg.OperationalError:
            if connection.broken:
                return False
            raise
    return True


@asynccontextmanager
async def opened(engine: AsyncEngine) -> AsyncIterator[Inserts]:
    """The writer for `engine`'s database, for as long as the context lasts. On PostgreSQL it keeps its own
    autocommit connections, made with the parameters SQLAlchemy connects with."""
    if engine.dialect.name != "postgresql":
        yield Inserts(engine, None)
        return
    _, connect = engine.dialect.create_connect_args(engine.url)
    pool: AsyncConnectionPool = AsyncConnectionPool(
        kwargs={**connect, "autocommit": True},
        min_size=1,
        max_size=POOL_SIZE,
        open=False,
        name="hitl-inserts",
    )
    await pool.open()
    try:
        yield Inserts(engine, pool)
    finally:
        await pool.close()
