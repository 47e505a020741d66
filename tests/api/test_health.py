"""Health, as a load balancer and Kubernetes read it: live while the process serves; ready only while the database
answers at this code's schema, an upstream is configured and the replica is not draining."""

from __future__ import annotations

import sqlalchemy
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import db
from gateway.runtime import Runtime


def test_live_and_ready_need_no_key(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "checks": {"database": True, "migrations": True, "upstreams": True, "not_draining": True},
    }


def test_a_draining_replica_is_not_ready_but_still_live(app: FastAPI, client: TestClient) -> None:
    runtime: Runtime = app.state.runtime
    runtime.start_draining()
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["not_draining"] is False
    assert client.get("/health/live").status_code == 200


def test_a_schema_behind_the_code_is_not_ready(client: TestClient, database_url: str) -> None:
    engine = sqlalchemy.create_engine(db.sync_url(database_url))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0012'"))
    engine.dispose()
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["checks"] == {
        "database": True,
        "migrations": False,
        "upstreams": True,
        "not_draining": True,
    }


def test_a_database_that_does_not_answer_is_not_ready(app: FastAPI, client: TestClient, tmp_path: object) -> None:
    runtime: Runtime = app.state.runtime
    answering = runtime.engine
    runtime.engine = db.create_engine("sqlite:////nonexistent-folder/hitl.db")
    try:
        ready = client.get("/health/ready")
    finally:
        client.portal.call(runtime.engine.dispose)  # type: ignore[union-attr]
        runtime.engine = answering
    assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
