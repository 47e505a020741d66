from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import db
from gateway.app import create_app
from gateway.models import Role
from gateway.review.sandbox import Sandbox
from gateway.runtime import Runtime
from gateway.settings import (
    AuditSettings,
    HoldSettings,
    LocalModelSettings,
    SelfCheckSettings,
    Settings,
    UpstreamSettings,
    WebhookSettings,
)
from tests import factories
from tests.factories import MODEL, UPSTREAM

# litellm downloads a model cost map when it is imported unless told not to (tests import it as a client).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def no_server_outlives_its_test() -> Iterator[None]:
    """Every `hitl serve` a test started is stopped when it ends, passed or failed (one whose start timed out
    included): a server left running holds its port, its database and a core for the rest of the run."""
    yield
    factories.stop_every_gateway()


def _reset_postgres(url: str) -> None:
    engine = sqlalchemy.create_engine(db.sync_url(url))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
    engine.dispose()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The review desk's sandbox, as the app makes it (one worker process, started on first use)."""
    made = Sandbox(seconds=10.0)  # the limit a loaded machine needs for honest work; tests of the limit make their own
    yield made
    made.close()


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
def make_settings(database_url: str, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    marker = request.node.get_closest_marker("keepalive")
    keepalive = float(marker.args[0]) if marker else 30.0

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "upstreams": [
                UpstreamSettings(
                    name=MODEL, provider="openai", model="gpt-4o-mini", api_base=UPSTREAM, api_key="sk-upstream"
                )
            ],
            "local_model": LocalModelSettings(enabled=False),
            # A streamed answer's keep-alive interval long enough that no test's answer outlasts it on a slow
            # machine (past it the 200 leaves as `generating`); a test about keep-alives marks itself
            # `@pytest.mark.keepalive(seconds)`.
            "hold": HoldSettings(default_wait=2.0, max_wait=30.0, poll_interval=0.2, keepalive=keepalive),
            "secret_key": "test-secret-key",
            # Off unless a test is about it: a judge call would take a second turn on the mocked upstream.
            "selfcheck": SelfCheckSettings(mode="never"),
            # No random audit draws unless a test is about them.
            "audit": AuditSettings(rate=0.0),
            # No webhook delivery loop polling the outbox unless a test is about it.
            "webhooks": WebhookSettings(enabled=False),
            # Console decisions take effect at once unless a test is about the undo window.
            "undo_seconds": 0.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment the `hitl` command reads: the test's database, no config file, the bundled policy."""
    monkeypatch.setenv("HITL_DATABASE_URL", database_url)
    monkeypatch.delenv("HITL_CONFIG", raising=False)
    monkeypatch.delenv("HITL_POLICY_PATH", raising=False)
    return database_url


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def clock() -> factories.ManualClock:
    """The time claims and logins see; a test moves it with `clock.advance(seconds)`."""
    return factories.ManualClock()


@pytest.fixture
def app(settings: Settings, clock: factories.ManualClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def api_key(database_url: str) -> str:
    return factories.make_api_key(database_url)


@pytest.fixture
def upstream() -> Iterator[factories.UpstreamMock]:
    """The mocked upstream every test's gateway talks to; its routes are named (`upstream.chat`)."""
    with factories.mocked(UPSTREAM, assert_all_called=False) as mock:
        yield factories.UpstreamMock(mock)


@pytest.fixture
async def aclient(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An async client in the test's own event loop, so a test can run a waiting request and a decision at once."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as async_client:
            yield async_client


@pytest.fixture
def agent(database_url: str) -> tuple[str, str]:
    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    return "ada", "correct horse"


@pytest.fixture
def senior(database_url: str) -> tuple[str, str]:
    factories.make_agent(database_url, "grace", "battery staple", Role.SENIOR)
    return "grace", "battery staple"


@pytest.fixture
def unsure_upstream() -> Iterator[str]:
    """An OpenAI-compatible server on a loopback port whose every answer is unsure (so it is held), for
    gateways that run as their own processes (respx mocks only this one); yields its base URL."""
    unsure = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
    with factories.serving(factories.fake_upstream(unsure)) as base:
        yield f"{base}/v1"


@pytest.fixture
async def decided(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    senior: tuple[str, str],
) -> dict[str, str]:
    """The six decisions of `factories.decided_dataset`, made through the app's review desk; their review ids."""
    runtime: Runtime = app.state.runtime
    return await factories.decided_dataset(runtime, aclient, upstream, api_key, agent[0], senior[0])
