"""Storage models: timestamps come back timezone-aware from every database, and states are enums."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import StatementError

from gateway.models import ApiKey, LoginFailure, ReviewStatus
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
    assert [status.value for status in ReviewStatus] == ["open", "decided"]
