"""The reviews of a period's exchanges are read from the reviews' own index: on SQLite the planner goes from the
reviews (fewer than the exchanges) once their range is closed, where with an open range it went from every
exchange of the period to its reviews."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import func, insert
from sqlmodel import col, select

from gateway import db
from gateway.insights.scope import Scope
from gateway.models import Agent, ApiKey, Decision, Exchange, KeyRole, Review

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def seed(url: str) -> None:
    """Thirty days of exchanges, a third of them held and decided, with the planner's statistics gathered."""
    engine = sqlalchemy.create_engine(db.sync_url(url))
    rng = random.Random(3)
    made, held, decided = [], [], []
    for number in range(6000):
        at = NOW - timedelta(days=30) + timedelta(seconds=number * 30 * 86400 / 6000)
        made.append({"id": f"x{number}", "request_id": "r", "api_key_id": 1, "request_hash": "", "model": "m",
                     "upstream_model": "m", "stream": False, "dialect": "chat", "request": {}, "response": {},
                     "candidate_text": "", "signals": {}, "confidence": rng.random(), "policy_version": "p",
                     "route": "release", "tier": None, "reason": "", "status": "released", "calibrator": "default",
                     "upstream_ms": 100.0, "created_at": at})  # fmt: skip
        if number % 3 == 0:
            made[-1].update(route="hold", tier="agent", status="held")
            held.append({"id": f"r{number}", "exchange_id": f"x{number}", "api_key_id": 1, "tier": "agent",
                         "kind": "hold", "status": "decided", "created_at": at, "deadline_at": at,
                         "decided_at": at + timedelta(seconds=30)})  # fmt: skip
            decided.append({"review_id": f"r{number}", "agent_id": 1, "action": "approve", "comment": "", "tags": [],
                            "created_at": at + timedelta(seconds=30)})  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(ApiKey.__table__).values(  # type: ignore[attr-defined]
            name="k", role=KeyRole.CLIENT, prefix="k", key_hash="k", created_at=NOW, disabled=False))  # fmt: skip
        if connection.execute(select(func.count()).select_from(Agent)).scalar_one() == 0:
            connection.execute(insert(Agent.__table__).values(  # type: ignore[attr-defined]
                username="a", password_hash="", role="agent", created_at=NOW))  # fmt: skip
        connection.execute(insert(Exchange.__table__), made)  # type: ignore[attr-defined]
        connection.execute(insert(Review.__table__), held)  # type: ignore[attr-defined]
        connection.execute(insert(Decision.__table__), decided)  # type: ignore[attr-defined]
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def first_step(url: str, reviewed: Any, scope: Scope) -> str:
    """Where SQLite's plan for the week's decisions by kind (as the summary counts them) starts."""
    query = (
        select(Decision.action, func.count())
        .join(Review, col(Decision.review_id) == col(Review.id))
        .join(Exchange, col(Review.exchange_id) == col(Exchange.id))
        .where(reviewed, scope.decided(), *scope.conditions())
        .group_by(Decision.action)
    )
    engine = sqlalchemy.create_engine(db.sync_url(url))
    compiled = query.compile(dialect=engine.dialect)
    stored = [value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value
              for value in (compiled.params[name] for name in compiled.positiontup or ())]  # fmt: skip
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(stored)).all()
    engine.dispose()
    return str(plan[0][-1])


def test_a_periods_reviews_are_read_from_their_own_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'periods.db'}"  # SQLite's planner, whatever database the suite runs on
    db.upgrade(url)
    seed(url)
    week = Scope(since=NOW - timedelta(days=7), until=NOW)
    assert (
        first_step(url, week.reviewed(), week)
        == "SEARCH reviews USING INDEX ix_reviews_created_at (created_at>? AND created_at<?)"
    )
    # The same range left open: the planner went from every exchange of the week.
    opened = col(Review.created_at) >= week.since
    assert first_step(url, opened, week).startswith("SEARCH exchanges USING INDEX ix_exchanges_created_at")
