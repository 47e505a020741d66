from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import respx
import sqlalchemy
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import db
from gateway.app import create_app
from gateway.settings import HoldSettings, LocalModelSettings, Settings, UpstreamSettings
from tests import factories

UPSTREAM = "http://upstream.test/v1"
MODEL = "support-bot"


def _reset_postgres(url: str) -> None:
    engine = sqlalchemy.create_engine(db.sync_url(url))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
    engine.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite in a temporary folder, or the PostgreSQL named by HITL_TEST_DATABASE_URL (reset per test)."""
    url = os.environ.get("HITL_TEST_DATABASE_URL")
    if url:
        _reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'hitl.db'}"
    db.upgrade(url)
    return url


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "upstreams": [
                UpstreamSettings(name=MODEL, provider="openai", model="gpt-4o-mini", api_base=UPSTREAM, api_key="sk-upstream")
            ],
            "local_model": LocalModelSettings(enabled=False),
            "hold": HoldSettings(default_wait=2.0, max_wait=30.0, poll_interval=0.2, keepalive=1.0),
            "secret_key": "test-secret-key",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def api_key(database_url: str) -> str:
    return factories.make_api_key(database_url)


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as mock:
        yield mock
