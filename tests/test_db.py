"""The migrations are the schema: they build every table the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from gateway import db, models  # noqa: F401


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
