"""Which decisions an export takes, one model for the command, the admin API and the console, so a bad value
gets the same clear error whichever way it came in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import InvalidRequest
from gateway.models import Action
from gateway.review.decisions import REASON_TAGS

CLOSING = (Action.APPROVE, Action.EDIT, Action.OVERRIDE)


class Filters(BaseModel):
    """Every field narrows; an empty list or None takes all. Times are the decision's, in UTC when no zone
    is given. `after_cursor` is the `cursor.next` of an earlier export's manifest: continue after it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime | None = None
    until: datetime | None = None
    after_cursor: int | None = Field(default=None, ge=0)
    models: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    max_confidence: float | None = Field(default=None, ge=0, le=1)

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @field_validator("actions")
    @classmethod
    def _closing(cls, value: tuple[Action, ...]) -> tuple[Action, ...]:
        wrong = [str(action) for action in value if action not in CLOSING]
        if wrong:
            raise ValueError(f"{wrong} do not close a review; an export takes approve, edit and override")
        return value

    @field_validator("tags")
    @classmethod
    def _known_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(REASON_TAGS))
        if unknown:
            raise ValueError(f"unknown reason tags {unknown}; the tags are {list(REASON_TAGS)}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Filters:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        low, high = self.min_confidence, self.max_confidence
        if low is not None and high is not None and low > high:
            raise ValueError("min_confidence must not be above max_confidence")
        return self

    def described(self) -> dict[str, Any]:
        """The filters as a manifest records them: only those set."""
        return {key: value for key, value in self.model_dump(mode="json").items() if value not in (None, [], ())}


def parse(values: dict[str, Any]) -> Filters:
    """Filters from loose values (query parameters, command options); a bad one is the caller's error."""
    try:
        return Filters.model_validate({key: value for key, value in values.items() if value not in (None, "", [])})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "filters"
        raise InvalidRequest(f"{where}: {problem['msg']}", param=where) from None
