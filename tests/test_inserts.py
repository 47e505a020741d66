"""One row written the cheap way is the row SQLAlchemy's own INSERT writes, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import insert, select

from gateway import db, inserts
from gateway.models import ApiKey, Exchange, ExchangeStatus, Route
from tests import factories

TABLE = Exchange.__table__  # type: ignore[attr-defined]


def _exchange(api_key_id: int, **fields: Any) -> dict[str, Any]:
    exchange = Exchange(
        request_id="req-1",
        api_key_id=api_key_id,
        request_hash="ab" * 32,
        model="m",
        stream=False,
        request={"model": "m", "messages": [{"role": "user", "content": "Où est ma commande ? \u2603"}]},
        upstream_model="gpt",
        response=factories.completion_body("Lyon.", logprob=-0.25),
        candidate_text="Lyon.",
        signals={"mean": -0.25, "missing": []},
        confidence=0.78,
        policy_version="v1",
        calibrator="default",
        route=Route.RELEASE,
        status=ExchangeStatus.RELEASED,
        upstream_ms=12.5,
        created_at=datetime(2026, 12, 1, 21, 41, 42, 123456, tzinfo=UTC),
        **fields,
    )
    table_columns = {column.key for column in TABLE.columns}
    return {key: value for key, value in exchange.model_dump().items() if key in table_columns}


def _raw_rows(database_url: str) -> list[tuple[Any, ...]]:
    """The rows as the database holds them, read without SQLAlchemy's types: text, numbers, NULLs."""
    engine = sqlalchemy.create_engine(db.sync_url(database_url))
    cast = "::text" if db.is_postgres(database_url) else ""
    columns = ", ".join(f"{column.name}{cast}" for column in TABLE.columns)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"SELECT {columns} FROM exchanges ORDER BY id").all()
    engine.dispose()
    return [tuple(row) for row in rows]


async def test_a_row_written_in_one_trip_is_the_row_sqlalchemy_writes(database_url: str) -> None:
    factories.make_api_key(database_url)
    with factories.sync_session(database_url) as session:
        api_key_id = session.exec(select(ApiKey)).one()[0].id
    engine = db.create_engine(database_url)
    try:
        ours, theirs = _exchange(api_key_id, id="chatcmpl-a"), _exchange(api_key_id, id="chatcmpl-b")
        async with inserts.opened(engine) as writer:
            await writer.one(TABLE, ours)
        async with engine.begin() as connection:
            await connection.execute(insert(TABLE), theirs)
    finally:
        await engine.dispose()
    first, second = _raw_rows(database_url)
    assert first[0] == "chatcmpl-a" and second[0] == "chatcmpl-b"
    assert first[1:] == second[1:]  # every other column the same text, number or NULL


async def test_a_failed_insert_leaves_nothing_open(database_url: str) -> None:
    factories.make_api_key(database_url)
    engine = db.create_engine(database_url)
    try:
        row = _exchange(1, id="chatcmpl-a")
        async with inserts.opened(engine) as writer:
            await writer.one(TABLE, row)
            with pytest.raises(sqlalchemy.exc.IntegrityError) as failed:
                await writer.one(TABLE, row)  # the same id again
            assert "unique" in str(failed.value).lower()
            # The connection is usable again: no transaction was left open on it.
            await writer.one(TABLE, {**row, "id": "chatcmpl-b"})
        async with engine.connect() as connection:
            assert (await connection.execute(select(sqlalchemy.func.count()).select_from(TABLE))).scalar() == 2
    finally:
        await engine.dispose()


def _drop_connections(database_url: str) -> int:
    """What a restarted server does to the connections a pool holds: end every other session on the database."""
    engine = sqlalchemy.create_engine(db.sync_url(database_url))
    with engine.connect() as connection:
        ended = connection.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar_one()
    engine.dispose()
    return int(ended)


def _count(database_url: str) -> int:
    return len(_raw_rows(database_url))


async def test_a_connection_the_server_dropped_is_replaced_and_the_row_written_once(database_url: str) -> None:
    if not db.is_postgres(database_url):
        pytest.skip("PostgreSQL's own connections: SQLite has no server to drop them")
    factories.make_api_key(database_url)
    engine = db.create_engine(database_url)
    try:
        async with inserts.opened(engine) as writer:
            await writer.one(TABLE, _exchange(1, id="chatcmpl-a"))
            assert _drop_connections(database_url) >= 1
            await writer.one(TABLE, _exchange(1, id="chatcmpl-b"))  # no ping first: it fails, then runs again
            assert _count(database_url) == 2
            # A first try that committed before its connection was lost: the second finds the row there, once.
            landed = _exchange(1, id="chatcmpl-c")
            await writer.one(TABLE, landed)
            _drop_connections(database_url)
            await writer.one(TABLE, landed)
            assert _count(database_url) == 3
            # A row that really is there twice is still refused, the connection alive.
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                await writer.one(TABLE, landed)
    finally:
        await engine.dispose()
