"""Storage models: timestamps come back timezone-aware from every database, states are enums, and a row written
by a plain INSERT is held as SQLAlchemy holds a row it reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy
from sqlalchemy.exc import StatementError

from gateway.models import (
    ApiKey,
    Exchange,
    ExchangeStatus,
    LoginFailure,
    ReviewStatus,
    Route,
    as_stored,
    plain_defaults,
)
from tests import factories


def test_timestamps_come_back_in_utc(database_url: str) -> None:
    stamped = datetime(2026, 11, 23, 9, 30, 15, tzinfo=UTC)
    with factories.sync_session(database_url) as session:
        session.add(LoginFailure(username="ada", address="127.0.0.1", at=stamped))
        session.commit()
    with factories.sync_session(database_url) as session:
        found = session.get(LoginFailure, 1)
        assert found is not None and found.at == stamped and found.at.tzinfo is not None
        assert found.at.utcoffset() == UTC.utcoffset(None)


def test_a_naive_timestamp_is_refused(database_url: str) -> None:
    with factories.sync_session(database_url) as session:
        session.add(ApiKey(name="x", prefix="hitl-x", key_hash="h", created_at=datetime(2026, 1, 1)))
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()


def test_review_status_is_an_enum_with_the_stored_values() -> None:
    assert [status.value for status in ReviewStatus] == ["open", "decided", "cancelled"]


def _exchange_row() -> dict[str, object]:
    given = {
        "id": "chatcmpl-" + "a" * 32,
        "created_at": datetime(2026, 12, 2, 5, 0, tzinfo=UTC),
        "request_id": "req-1",
        "api_key_id": 1,
        "model": "m",
        "upstream_model": "m",
        "request": {"messages": []},
        "response": {"choices": []},
        "signals": {"missing": []},
        "policy_version": "v1",
        "route": Route.RELEASE,
        "status": ExchangeStatus.RELEASED,
    }
    return {**plain_defaults(Exchange), **given}


def test_a_stored_row_is_the_object_its_constructor_builds() -> None:
    row = _exchange_row()
    stored, built = as_stored(Exchange, row), Exchange(**row)
    assert stored.model_dump() == built.model_dump()
    assert stored.response is row["response"]  # the values themselves, not copies
    state = sqlalchemy.inspect(stored)
    assert state.transient and not any(attribute.history.has_changes() for attribute in state.attrs)


def test_a_stored_row_needs_every_column() -> None:
    row = _exchange_row()
    del row["created_at"], row["decided_at"]
    with pytest.raises(TypeError, match="created_at, decided_at"):
        as_stored(Exchange, row)
