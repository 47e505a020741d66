"""Which exchanges a figure counts: those that arrived in a period, narrowed by tier, model, API key and the reason
they were routed as they were. One model for the admin API and its CSV, so a bad value gets the same clear error
either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, field_validator, model_validator
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from gateway.errors import InvalidRequest
from gateway.models import Decision, Exchange
from gateway.review import periods

DEFAULT_PERIOD = timedelta(days=7)
_WHEN = TypeAdapter(datetime)
# Why an exchange went where it went, by kind: how its stored reason begins (`Policy.route`, the relay).
# `rule:<name>` narrows to one rule.
REASONS = {
    "confidence": "confidence ",
    "rule": "rule ",
    "tool_calls": "tool calls ",
    "unscored": "unscored",
    "progressive": "progressive:",
    "reused": "reused ",
    "upstream_failed": "upstream failed",
}


class Scope(BaseModel):
    """The period is `[since, until)` of the exchanges' arrival, in UTC when no zone is given; absent, the last
    seven days up to now. Each of `tier`, `model`, `api_key` and `reason` (a kind of `REASONS`, or `rule:<name>`)
    narrows when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime
    until: datetime
    tier: str | None = None
    model: str | None = None
    api_key: int | None = None
    reason: str | None = None

    @field_validator("reason")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        kind, named, name = (value or "").partition(":")
        if value is not None and (kind not in REASONS or (named and (kind != "rule" or not name))):
            raise ValueError(f"must be one of {', '.join(REASONS)}, or rule:<name>")
        return value

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> Scope:
        if self.since >= self.until:
            raise ValueError("since must be before until")
        return self

    def described(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def reviewed(self) -> ColumnElement[bool]:
        """What the conditions imply of the reviews of those exchanges (`review.periods`)."""
        return periods.reviews_since(self.since)

    def decided(self) -> ColumnElement[bool]:
        """The same of the decisions on those reviews: none is older than its review."""
        return col(Decision.created_at) >= self.since

    def conditions(self) -> list[ColumnElement[bool]]:
        """The scope as conditions on `Exchange`, for a query's WHERE; never the copies made for gold items and
        second reviews (`review.shadows`): they are checks on reviewers, not traffic."""
        taken = [col(Exchange.created_at) >= self.since, col(Exchange.created_at) < self.until,
                 col(Exchange.copy_of).is_(None)]  # fmt: skip
        if self.tier is not None:
            taken.append(col(Exchange.tier) == self.tier)
        if self.model is not None:
            taken.append(col(Exchange.model) == self.model)
        if self.api_key is not None:
            taken.append(col(Exchange.api_key_id) == self.api_key)
        if self.reason is not None:
            kind, _, name = self.reason.partition(":")
            begins = f"rule {name!r} matched" if name else REASONS[kind]
            taken.append(col(Exchange.reason).startswith(begins, autoescape=True))
        return taken


def parse(values: dict[str, Any], now: datetime) -> Scope:
    """A scope from loose values (query parameters); a bad one is the caller's error, naming the parameter."""
    given = {"until": now, **{key: value for key, value in values.items() if value not in (None, "")}}
    try:
        if "since" not in given:
            until = _WHEN.validate_python(given["until"])
            given["since"] = (until if until.tzinfo else until.replace(tzinfo=UTC)) - DEFAULT_PERIOD
        return Scope.model_validate(given)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "until"
        raise InvalidRequest(f"{where}: {problem['msg'].removeprefix('Value error, ')}", param=where) from None
