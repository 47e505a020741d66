"""Which open review comes first: those whose client is still waiting on the line, nearest deadline first (the
client about to be given the tier's deadline outcome); then the rest, oldest first, the order in which their
tier's target wait runs out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from gateway.models import Review, ReviewKind


def client_waiting(now: datetime) -> ColumnElement[bool]:
    """A held answer's client is still on the line: its deadline is ahead (a client that polls, or took the
    deadline outcome, has a deadline behind it)."""
    return and_(col(Review.kind) == ReviewKind.HOLD, col(Review.deadline_at) > now)


def most_urgent_first(now: datetime) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY terms: waiting clients first, by deadline; then the rest by age."""
    waiting = client_waiting(now)
    return (
        case((waiting, 0), else_=1),
        case((waiting, col(Review.deadline_at)), else_=col(Review.created_at)),
        col(Review.created_at).asc(),
    )
