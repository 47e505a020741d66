"""The migrations are the schema: they build every table the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel, select

from gateway import db, models  # noqa: F401
from gateway.conversation.prompt_keys import prompt_key
from gateway.models import ApiKey, Decision, KeyRole, PreferencePair
from tests import factories


def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(db.sync_url(database_url))
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_urls_get_their_drivers() -> None:
    assert db.async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert db.async_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert db.sync_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"


def test_pairs_made_before_0005_get_their_answers_as_messages(database_url: str) -> None:
    """Migration 0005 rebuilds each old pair's rejected answer from its exchange, tool calls structured."""
    config = db.alembic_config(database_url)
    command.downgrade(config, "0004")
    call = {"id": "call_1", "type": "function", "function": {"name": "refund", "arguments": '{"amount": 5}'}}
    response = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    engine = create_engine(db.sync_url(database_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, created_at, disabled) VALUES ('k', 'p', 'h', :t, false)"
            ),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO agents (username, password_hash, role, active, created_at)"
                " VALUES ('a', 'x', 'agent', true, :t)"
            ),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO exchanges (id, request_id, api_key_id, model, upstream_model, stream, request, response,"
                " candidate_text, signals, policy_version, route, reason, status, calibrator, upstream_ms, created_at)"
                " VALUES ('chatcmpl-1', 'r', 1, 'm', 'm', false, '{}', :response, 'x', '{}', 'v', 'hold', '',"
                " 'overridden', 'default', 0, :t)"
            ),
            {"response": json.dumps(response), "t": "2026-01-01 00:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO reviews (id, exchange_id, api_key_id, tier, kind, status, created_at, deadline_at)"
                " VALUES ('rev-1', 'chatcmpl-1', 1, 'agent', 'hold', 'decided', :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO decisions (review_id, agent_id, action, text, comment, tags, created_at)"
                " VALUES ('rev-1', 1, 'override', 'No.', '', '[]', :t)"
            ),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO preference_pairs (exchange_id, decision_id, prompt, chosen, rejected, action, created_at)"
                " VALUES ('chatcmpl-1', 1, '[]', 'No.', 'x', 'override', :t)"
            ),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
    engine.dispose()
    db.upgrade(database_url)
    with factories.sync_session(database_url) as session:
        pair = session.exec(select(PreferencePair)).one()
    assert pair.chosen_message == {"role": "assistant", "content": "No."}
    assert pair.rejected_message == {"role": "assistant", "content": None, "tool_calls": [call]}


def test_decisions_made_before_0009_get_their_prompt_key_and_old_keys_are_client_keys(database_url: str) -> None:
    config = db.alembic_config(database_url)
    command.downgrade(config, "0008")
    request = {"model": "m", "messages": [{"role": "user", "content": "Where is my REFUND?"}]}
    at = {"t": "2026-01-01 00:00:00+00:00"}
    engine = create_engine(db.sync_url(database_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, created_at, disabled) VALUES ('k', 'p', 'h', :t, false)"
            ),
            at,
        )
        connection.execute(
            text(
                "INSERT INTO agents (username, password_hash, role, active, created_at)"
                " VALUES ('a', 'x', 'agent', true, :t)"
            ),
            at,
        )
        for number, action in enumerate(("approve", "escalate")):
            connection.execute(
                text(
                    "INSERT INTO exchanges (id, request_id, api_key_id, model, upstream_model, stream, request,"
                    " response, candidate_text, signals, policy_version, route, reason, status, calibrator,"
                    " upstream_ms, request_hash, created_at)"
                    f" VALUES ('chatcmpl-{number}', 'r', 1, 'm', 'm', false, :request, '{{}}', 'x', '{{}}', 'v',"
                    " 'hold', '', 'approved', 'default', 0, '', :t)"
                ),
                {"request": json.dumps(request), **at},
            )
            connection.execute(
                text(
                    "INSERT INTO reviews (id, exchange_id, api_key_id, tier, kind, status, created_at, deadline_at)"
                    f" VALUES ('rev-{number}', 'chatcmpl-{number}', 1, 'agent', 'hold', 'decided', :t, :t)"
                ),
                at,
            )
            connection.execute(
                text(
                    "INSERT INTO decisions (review_id, agent_id, action, comment, tags, created_at)"
                    f" VALUES ('rev-{number}', 1, '{action}', '', '[]', :t)"
                ),
                at,
            )
    engine.dispose()
    db.upgrade(database_url)
    with factories.sync_session(database_url) as session:
        approve, escalate = session.exec(select(Decision).order_by(Decision.id)).all()  # type: ignore[arg-type]
        key = session.exec(select(ApiKey)).one()
    assert approve.prompt_key == prompt_key({"messages": [{"role": "user", "content": "where is my refund"}]})
    assert escalate.prompt_key is None  # an escalation closes nothing: no record, no key
    assert key.role == KeyRole.CLIENT


def test_large_bodies_are_lz4_compressed_on_postgresql(database_url: str) -> None:
    """Migration 0012: PostgreSQL compresses a stored answer with LZ4 (a tenth of pglz's CPU in the commit)."""
    if not db.is_postgres(database_url):
        pytest.skip("PostgreSQL compresses TOAST values; SQLite does not")
    engine = create_engine(db.sync_url(database_url))
    compression = "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'exchanges'::regclass"
    available = "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    try:
        with engine.connect() as connection:
            methods = dict(connection.execute(text(compression)).all())
            assert "lz4" in connection.execute(text(available)).scalar(), "CI's PostgreSQL is built with LZ4"
        assert methods["response"] == methods["request"] == methods["candidate_text"] == "l"
        assert methods["signals"] == ""  # small columns keep the server's default
        command.downgrade(db.alembic_config(database_url), "0011")
        with engine.connect() as connection:
            assert dict(connection.execute(text(compression)).all())["response"] == ""
    finally:
        engine.dispose()


async def test_the_figures_read_through_connections_that_cannot_write(database_url: str) -> None:
    """On SQLite the Insights figures have connections of their own, which may only read (the gateway's one
    writing connection is never held by a team lead's page) and map the file into memory; on PostgreSQL the pool
    is shared."""
    engine = db.create_engine(database_url)
    reader = db.create_reader(database_url, engine)
    try:
        async with engine.begin() as connection:
            added = "INSERT INTO leases (name, holder, expires_at) VALUES ('x', '', '2026-01-01')"
            await connection.execute(text(added))
        async with reader.connect() as connection:
            seen = (await connection.execute(text("SELECT count(*) FROM leases WHERE name = 'x'"))).scalar_one()
            if db.is_postgres(database_url):
                assert reader is engine
            else:
                assert reader is not engine and reader.pool.size() == db.READERS
                with pytest.raises(OperationalError, match="readonly database"):
                    await connection.execute(text("DELETE FROM leases WHERE name = 'x'"))
                mapped = (await connection.execute(text("PRAGMA mmap_size"))).scalar_one()
                assert mapped == db.READER_MMAP_BYTES  # a week's figures read the OS cache, not a read() a page
        assert seen == 1  # what the writer committed, the reader sees (WAL)
        assert db.create_reader("sqlite://", engine) is engine  # in memory: one connection's database
    finally:
        if reader is not engine:
            await reader.dispose()
        await engine.dispose()
