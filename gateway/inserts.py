"""One row written and committed, durable when the call returns, at the least cost each database allows.

The release path writes one row per request (the exchange) and the client waits for its commit. Through a
session that costs a transaction's worth of round trips: on PostgreSQL BEGIN, INSERT and COMMIT; on SQLite
four trips to aiosqlite's thread (cursor, execute, cursor close, commit), each a hand-over of the GIL, which
under load cost more CPU than the write itself. Here PostgreSQL runs the INSERT alone in autocommit, and SQLite
runs the INSERT and its commit in one trip. The row is the same bytes either way: the statement is
SQLAlchemy's own, compiled once, and each value goes through its column type's own bind processor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine


async def insert_one(engine: AsyncEngine, table: Table, values: dict[str, Any]) -> None:
    """Insert one row into `table` and commit it; a failed INSERT leaves nothing behind."""
    if engine.dialect.name == "sqlite":
        await _sqlite(engine, table, values)
        return
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(insert(table), values)


@dataclass(frozen=True)
class _Statement:
    compiled: Compiled
    names: tuple[str, ...]  # the positional parameters' names, in order
    processors: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        given = self.compiled.construct_params(values)
        assert given is not None
        return tuple(
            process(given[name]) if process else given[name]
            for name, process in zip(self.names, self.processors, strict=True)
        )


@lru_cache(maxsize=32)
def _compiled(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Statement:
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ())
    processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    return _Statement(compiled, names, processors)


async def _sqlite(engine: AsyncEngine, table: Table, values: dict[str, Any]) -> None:
    statement = _compiled(table, tuple(values), engine.dialect)
    sql, parameters = statement.compiled.string, statement.parameters(values)

    def write(connection: sqlite3.Connection) -> None:
        try:
            connection.execute(sql, parameters)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise

    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection  # aiosqlite's connection: its thread owns the sqlite3 one
        assert driver is not None
        # aiosqlite (pinned) runs each call it is given in its thread, one after the other: the INSERT and the
        # commit go in one call instead of four.
        try:
            await driver._execute(write, driver._conn)
        except sqlite3.Error as exc:  # raised as SQLAlchemy raises it (IntegrityError, OperationalError, ...)
            raise DBAPIError.instance(sql, parameters, exc, sqlite3.Error) from exc
