"""The insights admin API on a seeded history whose figures are known: every number of the summary is checked
against what the history says, the scope narrows it, the CSV says the same, and only an insights key reads it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.models import (
    Action,
    ApiKey,
    DeadlineOutcome,
    Decision,
    Exchange,
    ExchangeStatus,
    KeyRole,
    Review,
    ReviewKind,
    ReviewStatus,
    Route,
)
from tests import factories

DAY = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday; the history is that week's
WEEK = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-09T00:00:00Z"}


def _exchange(key: int, at: datetime, route: Route, status: ExchangeStatus, **extra: Any) -> Exchange:
    fields: dict[str, Any] = {"tier": None, "upstream_ms": 100.0, "model": "support-bot"} | extra
    return Exchange(request_id="req", api_key_id=key, upstream_model="m", request={}, response={}, signals={},
                    policy_version="p", route=route, status=status, created_at=at, **fields)  # fmt: skip


def seed(database_url: str) -> None:
    """The week: 10 exchanges of the `web` key, 2 of the `mobile` key, and one of the week before.

    web: 4 released (upstream 100, 200, 300, 400 ms; one drawn for audit), 5 held in `agent` and 1 failed
    (timeout). Of the held: approved after 10 s and edited after 20 s (both in their client's wait), overridden
    after 100 s (past it: the client got the placeholder), escalated after 30 s and still open, and one open
    since 2 h before the summary. mobile: 1 held in `senior`, approved after 60 s; 1 failed (http_error).
    """
    factories.make_agent(database_url, "ada")
    with factories.sync_session(database_url) as session:
        web, mobile = ApiKey(name="web", prefix="w", key_hash="w"), ApiKey(name="mobile", prefix="m", key_hash="m")
        session.add_all([web, mobile])
        session.flush()
        assert web.id is not None and mobile.id is not None
        (agent,) = session.exec(select(factories.Agent)).all()
        rows: list[Any] = []
        for number, ms in enumerate((100.0, 200.0, 300.0, 400.0)):
            exchange = _exchange(web.id, DAY + timedelta(minutes=number), Route.RELEASE, ExchangeStatus.RELEASED,
                                 upstream_ms=ms)  # fmt: skip
            rows.append(exchange)
            if number == 0:
                rows.append(Review(exchange_id=exchange.id, api_key_id=web.id, tier="agent", kind=ReviewKind.AUDIT,
                                   created_at=exchange.created_at, deadline_at=exchange.created_at))  # fmt: skip
        rows.append(_exchange(web.id, DAY, Route.NONE, ExchangeStatus.FAILED, error_kind="timeout"))
        held = [  # (seconds to the decision, the action, the client's wait in seconds, its deadline outcome)
            (10, Action.APPROVE, 20, None),
            (20, Action.EDIT, 20, None),
            (100, Action.OVERRIDE, 20, DeadlineOutcome.PLACEHOLDER),
            (30, Action.ESCALATE, 20, DeadlineOutcome.PLACEHOLDER),
        ]
        for number, (seconds, action, wait, outcome) in enumerate(held):
            at = DAY + timedelta(hours=1, minutes=number)
            closes = action != Action.ESCALATE
            status = {Action.APPROVE: ExchangeStatus.APPROVED, Action.EDIT: ExchangeStatus.EDITED,
                      Action.OVERRIDE: ExchangeStatus.OVERRIDDEN}.get(action, ExchangeStatus.HELD)  # fmt: skip
            exchange = _exchange(web.id, at, Route.HOLD, status, tier="agent", deadline_outcome=outcome)
            review = Review(exchange_id=exchange.id, api_key_id=web.id, tier="agent", created_at=at,
                            deadline_at=at + timedelta(seconds=wait),
                            status=ReviewStatus.DECIDED if closes else ReviewStatus.OPEN,
                            decided_at=at + timedelta(seconds=seconds) if closes else None)  # fmt: skip
            decision = Decision(review_id=review.id, agent_id=agent.id, action=action,
                                created_at=at + timedelta(seconds=seconds))  # fmt: skip
            rows += [exchange, review, decision]
        late = _exchange(web.id, DAY + timedelta(days=2), Route.HOLD, ExchangeStatus.HELD, tier="agent")
        rows += [late, Review(exchange_id=late.id, api_key_id=web.id, tier="agent", created_at=late.created_at,
                              deadline_at=late.created_at)]  # fmt: skip
        senior = _exchange(mobile.id, DAY + timedelta(days=1), Route.HOLD, ExchangeStatus.APPROVED, tier="senior",
                           model="other-bot")  # fmt: skip
        at = senior.created_at
        review = Review(exchange_id=senior.id, api_key_id=mobile.id, tier="senior", created_at=at,
                        deadline_at=at + timedelta(seconds=120), status=ReviewStatus.DECIDED,
                        decided_at=at + timedelta(seconds=60))  # fmt: skip
        rows += [senior, review, Decision(review_id=review.id, agent_id=agent.id, action=Action.APPROVE)]
        rows.append(_exchange(mobile.id, DAY + timedelta(days=1), Route.NONE, ExchangeStatus.FAILED,
                              error_kind="http_error"))  # fmt: skip
        rows.append(_exchange(web.id, DAY - timedelta(days=3), Route.RELEASE, ExchangeStatus.RELEASED))  # last week
        for kind in (Exchange, Review, Decision):  # parents first: the rows are not linked by relationships
            session.add_all([row for row in rows if isinstance(row, kind)])
            session.flush()
        session.commit()


@pytest.fixture
def insights(app: FastAPI, database_url: str, clock: factories.ManualClock) -> tuple[TestClient, dict[str, str]]:
    seed(database_url)
    clock.offset = DAY + timedelta(days=2, hours=2) - datetime.now(UTC)  # the late review has waited 2 h
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    return TestClient(app), {"Authorization": f"Bearer {key}"}


def test_the_summary_counts_the_seeded_week(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights
    with client:
        found = client.get("/admin/insights/summary", params=WEEK, headers=headers).json()
    assert found["volume"] == 12 and found["answered"] == 10
    assert found["shares"] == {"released": 4 / 10, "held": 6 / 10, "audited": 1 / 10}
    assert found["decisions"] == {"approve": 2, "edit": 1, "override": 1, "escalate": 1}
    assert found["rates"] == {"override": 1 / 4, "edit": 1 / 4}
    assert found["time_to_decision_s"] == {"p50": 20.0, "p90": 100.0, "decided": 4}  # 10, 20, 60, 100
    assert found["decided_while_waiting"] == 3 / 4  # all but the override
    assert found["deadline_outcomes"] == {"placeholder": 2}
    oldest = 2 * 86400 + 3600 - 3 * 60  # the escalated one, from its arrival to the summary
    assert found["backlog"] == {"open": 2, "oldest_waiting_s": pytest.approx(oldest, abs=5)}
    assert found["upstream"] == {
        "failures": {"http_error": 1, "timeout": 1},
        "failure_rate": 2 / 12,
        "latency_ms": {"p50": 100.0, "p90": 300.0},  # seven at 100, then 200, 300, 400
    }


@pytest.mark.parametrize(
    ("narrowed", "volume", "held"),
    [({"tier": "senior"}, 1, 1), ({"model": "other-bot"}, 1, 1), ({"api_key": "web"}, 10, 5)],
)
def test_the_scope_narrows_every_figure(
    insights: tuple[TestClient, dict[str, str]], database_url: str, narrowed: dict[str, str], volume: int, held: int
) -> None:
    client, headers = insights
    if "api_key" in narrowed:  # by its id, as the console and `hitl keys list` show it
        with factories.sync_session(database_url) as session:
            key = session.exec(select(ApiKey).where(ApiKey.name == narrowed["api_key"])).one()
        narrowed = {"api_key": str(key.id)}
    with client:
        found = client.get("/admin/insights/summary", params=WEEK | narrowed, headers=headers).json()
    assert found["volume"] == volume and found["shares"]["held"] * found["answered"] == pytest.approx(held)


def test_the_csv_says_what_the_json_says(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights
    with client:
        shown = client.get("/admin/insights/summary", params=WEEK, headers=headers).json()
        sent = client.get("/admin/insights/summary", params=WEEK | {"format": "csv"}, headers=headers)
    assert sent.headers["content-type"].startswith("text/csv")
    table = dict(csv.reader(io.StringIO(sent.text)))
    assert table["figure"] == "value" and table["volume"] == "12" and table["decisions.override"] == "1"
    assert float(table["time_to_decision_s.p90"]) == shown["time_to_decision_s"]["p90"]
    assert table["scope.since"] == "2026-11-02T00:00:00Z" and table["upstream.failures.timeout"] == "1"


def test_the_default_period_is_the_last_seven_days(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights
    with client:
        found = client.get("/admin/insights/summary", headers=headers).json()
    assert found["scope"]["until"].startswith("2026-11-04T11:00") and found["scope"]["since"].startswith("2026-10-28")
    assert found["volume"] == 13  # the week before's exchange too


@pytest.mark.parametrize(
    ("params", "param"),
    [({"since": "yesterday"}, "since"), ({"since": "2026-11-09", "until": "2026-11-02"}, "since"),
     ({"api_key": "web"}, "api_key"), ({"format": "xml"}, "format"), ({"colour": "red"}, "colour")],
)  # fmt: skip
def test_a_bad_parameter_is_a_400_that_names_it(
    insights: tuple[TestClient, dict[str, str]], params: dict[str, str], param: str
) -> None:
    client, headers = insights
    with client:
        sent = client.get("/admin/insights/summary", params=params, headers=headers)
    assert sent.status_code == 400 and param in sent.json()["error"]["message"], sent.text


def test_only_an_insights_key_reads_it(insights: tuple[TestClient, dict[str, str]], api_key: str) -> None:
    client, _ = insights
    with client:
        anonymous = client.get("/admin/insights/summary")
        chat_key = client.get("/admin/insights/summary", headers={"Authorization": f"Bearer {api_key}"})
    assert anonymous.status_code == 401 and chat_key.status_code == 403
    assert "--role insights" in chat_key.json()["error"]["message"]
