"""Storage models. Portable SQL only: the same tables run on SQLite and PostgreSQL.

Decisions are append-only; a review's status changes exactly once, from `open` to `decided`, through a
conditional update (see `decisions.py`), which is what keeps two agents from deciding the same review.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy
from pydantic_core import PydanticUndefined
from sqlalchemy import JSON, Column, DateTime, Index, String, text
from sqlalchemy import Dialect as SQLDialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import AutoString, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch(moment: datetime) -> int:
    """Unix seconds."""
    return int(moment.timestamp())


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware in Python: stored with its zone, and given its UTC zone
    back when the database drops it (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: SQLDialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timestamps in UTC with their zone")
        return value

    def process_result_value(self, value: datetime | None, dialect: SQLDialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def timed_id(prefix: str, at: float) -> str:
    """An id whose first 12 hex digits are the millisecond it was made (`id_time` reads it back): a background
    response is named before it is stored, and any replica can tell a young one from one that never was."""
    return f"{prefix}-{int(at * 1000):012x}{uuid.uuid4().hex[12:]}"


def id_time(value: str) -> float | None:
    """When a `timed_id` was made, in seconds since the epoch; None for an id of another shape."""
    if not wellformed_id(value):
        return None
    return int(value.split("-", 1)[1][:12], 16) / 1000


Row = TypeVar("Row", bound=SQLModel)


def plain_defaults(model: type[SQLModel]) -> dict[str, Any]:
    """The fields' fixed defaults; fields made by a factory (ids, times) and fields with no default are not in it."""
    return {name: field.default for name, field in model.model_fields.items() if field.default is not PydanticUndefined}


def as_stored(model: type[Row], row: dict[str, Any]) -> Row:
    """A `model` instance holding `row` (every column), made the way SQLAlchemy makes one for a row it reads:
    the values set at once, without the change tracking that each attribute of an object built by its
    constructor goes through (about 300 µs for an exchange's 27 columns, some 4% of a released request's
    CPU). For a row written by a plain INSERT and only read after; an object for `session.add` is built by its
    constructor."""
    missing = {column.key for column in model.__table__.columns} - row.keys()  # type: ignore[attr-defined]
    if missing:
        raise TypeError(f"{model.__name__} row without {', '.join(sorted(missing))}")
    instance: Row = sqlalchemy.inspect(model).class_manager.new_instance()
    instance.__dict__.update(row)
    return instance


_ID = re.compile(r"[a-z]+-[0-9a-f]{32}")


def wellformed_id(value: str) -> bool:
    """Whether `value` has the shape of an id this gateway makes (`rev-<hex>`, `chatcmpl-<hex>`). Anything
    else (a NUL byte, which PostgreSQL refuses outright, or any other stray character) names nothing."""
    return _ID.fullmatch(value) is not None


def _when(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


def _maybe_when(**kwargs: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, **kwargs)


def _enum(**kwargs: Any) -> Any:
    # Plain strings, not SQL enums: adding a value later must not need an ALTER TYPE on PostgreSQL.
    return Field(sa_type=String(24), **kwargs)


def _json(factory: Any = None, **kwargs: Any) -> Any:
    if factory is not None:
        return Field(default_factory=factory, sa_column=Column(JSON, **kwargs))
    return Field(sa_column=Column(JSON, **kwargs))


class Route(StrEnum):
    RELEASE = "release"
    HOLD = "hold"
    NONE = "none"  # the upstream failed: there was no candidate to route


class ExchangeStatus(StrEnum):
    RELEASED = "released"  # released by policy, unchanged
    HELD = "held"  # waiting for an agent
    APPROVED = "approved"
    EDITED = "edited"
    OVERRIDDEN = "overridden"
    RELEASED_ON_DEADLINE = "released_on_deadline"  # nobody decided in time and the tier opts in to release
    FAILED = "failed"  # the upstream call failed; the client got an error and nothing was stored to review
    CANCELLED = "cancelled"  # a background response its client cancelled while it was held
    REUSED = "reused"  # not confident on its own: an agent's approved answer to the same request was sent instead


class Dialect(StrEnum):
    """The API a request arrived in; its answer goes back in the same one."""

    CHAT = "chat"  # OpenAI Chat Completions
    RESPONSES = "responses"  # the OpenAI Responses API
    MESSAGES = "messages"  # Anthropic Messages


class DeadlineOutcome(StrEnum):
    """What a waiting client gets when its deadline passes before anyone decides."""

    PLACEHOLDER = "placeholder"  # a completion whose content is the placeholder text
    REFUSAL = "refusal"  # the placeholder in `message.refusal`, content null (the SDK's parse() returns it)
    ERROR = "error"  # an OpenAI-shaped error the SDK does not retry, naming the review
    RELEASE = "release"  # the candidate goes out; the review stays open as an audit


class Action(StrEnum):
    APPROVE = "approve"
    EDIT = "edit"
    OVERRIDE = "override"
    ESCALATE = "escalate"  # to the next tier up, with a reason; the review stays open


DECIDED_STATUS = {
    Action.APPROVE: ExchangeStatus.APPROVED,
    Action.EDIT: ExchangeStatus.EDITED,
    Action.OVERRIDE: ExchangeStatus.OVERRIDDEN,
}


class Role(StrEnum):
    AGENT = "agent"
    SENIOR = "senior"
    ADMIN = "admin"


class KeyRole(StrEnum):
    CLIENT = "client"  # calls the chat API
    EXPORT = "export"  # reads the training-data export API (a data pipeline), nothing else
    INSIGHTS = "insights"  # reads the insights API (a team's own dashboard), nothing else


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str
    role: KeyRole = _enum(default=KeyRole.CLIENT)
    prefix: str = Field(description="First characters of the key, shown to people to tell keys apart.")
    key_hash: str = Field(index=True, unique=True)
    created_at: datetime = _when()
    disabled: bool = False
    webhook_url: str | None = Field(default=None, max_length=2000, description="Where this key's webhooks go.")
    # Signs this key's webhooks (Standard Webhooks, `whsec_...`); it must be kept to sign, so it is not hashed.
    webhook_secret: str | None = Field(default=None, max_length=200)
    retention_days: float | None = Field(
        default=None, description="Days this key's conversations are kept (None: the global HITL_RETENTION__DAYS)."
    )


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True)
    password_hash: str
    role: Role = _enum(default=Role.AGENT)
    active: bool = True
    created_at: datetime = _when()


class Exchange(SQLModel, table=True):
    """One proxied chat completion, from request to what was finally delivered."""

    __tablename__ = "exchanges"
    # Copies are few: indexed alone, so a query of the traffic (`copy_of IS NULL`) is never planned on this index.
    __table_args__ = (
        Index("ix_exchanges_copy_of", "copy_of", sqlite_where=text("copy_of IS NOT NULL"),
              postgresql_where=text("copy_of IS NOT NULL")),
    )  # fmt: skip

    id: str = Field(default_factory=lambda: new_id("chatcmpl"), primary_key=True)
    request_id: str = Field(index=True)
    api_key_id: int = Field(foreign_key="api_keys.id", index=True)
    idempotency_key: str | None = Field(default=None, max_length=255, index=True)
    request_hash: str = Field(
        default="", max_length=64, index=True, description="SHA-256 of the canonical request body (retries)."
    )
    model: str = Field(index=True, description="The model name the client asked for.")
    upstream_model: str
    stream: bool = False
    dialect: Dialect = _enum(default=Dialect.CHAT, description="The API the request arrived in.")
    request: dict[str, Any] = _json(nullable=False)
    response: dict[str, Any] = _json(nullable=False, comment="The upstream's candidate chat.completion as received.")
    candidate_text: str = ""
    signals: dict[str, Any] = _json(nullable=False)
    confidence: float | None = None
    policy_version: str
    route: Route = _enum()
    tier: str | None = None
    reason: str = ""
    status: ExchangeStatus = _enum(index=True)
    final_text: str | None = None
    # The tool calls an agent's edit sent instead of the candidate's (same ids, the agent's arguments).
    final_tool_calls: list[Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    deadline_outcome: DeadlineOutcome | None = Field(
        default=None, sa_type=String(24), description="What the client got when its wait ran out, if it did."
    )
    calibrator: str = Field(
        "default", max_length=64, description="What turned the signals into `confidence`: `default` or `cal-<id>`."
    )
    upstream_ms: float = 0.0
    error_kind: str | None = Field(
        default=None, max_length=24, description="Why the upstream call failed: timeout, unreachable, rejected, ..."
    )
    upstream_status: int | None = Field(default=None, description="The provider's HTTP status when the call failed.")
    created_at: datetime = _when(index=True)
    decided_at: datetime | None = _maybe_when()
    purged_at: datetime | None = _maybe_when(description="When its bodies were deleted after the retention period.")
    released_chars: int | None = Field(
        default=None,
        description="Characters of the candidate's text streamed to the client before the rest was held "
        "(progressive release); the client has them, whatever is decided about the rest.",
    )
    copy_of: str | None = Field(
        default=None,
        foreign_key="exchanges.id",
        description="The exchange this one copies for a gold or second review: no client's, never counted or exported.",
    )


class ReviewKind(StrEnum):
    HOLD = "hold"  # the client waits for the decision
    AUDIT = "audit"  # released already; the decision is a label and a lesson, not a delivery


class ReviewStatus(StrEnum):
    OPEN = "open"  # waiting in its tier's queue
    DECIDED = "decided"  # approved, edited or overridden; an escalation keeps a review open
    CANCELLED = "cancelled"  # its client cancelled the request (a background response) before anyone decided


class Shadow(StrEnum):
    """A review that checks the reviewers, on a copy of an exchange, served as an ordinary held review."""

    GOLD = "gold"  # a copy of a review an admin marked gold: the agent's decision is scored against its decision
    SECOND = "second"  # the second, independent review of a held answer: the two decisions' agreement is measured


class Review(SQLModel, table=True):
    """A held exchange waiting in a tier's queue, or a released one sampled for the `audit` queue."""

    __tablename__ = "reviews"
    # Checks on reviewers are few: indexed alone, so the agreement figures read them without scanning every review.
    __table_args__ = (
        Index("ix_reviews_shadow", "shadow", sqlite_where=text("shadow IS NOT NULL"),
              postgresql_where=text("shadow IS NOT NULL")),
    )  # fmt: skip

    id: str = Field(default_factory=lambda: new_id("rev"), primary_key=True)
    exchange_id: str = Field(foreign_key="exchanges.id", index=True, unique=True)
    api_key_id: int = Field(foreign_key="api_keys.id", index=True)
    tier: str = Field(index=True)
    kind: ReviewKind = _enum(default=ReviewKind.HOLD)
    audit_rate: float | None = Field(
        default=None, description="The sampling rate an audit review was drawn at; its label weighs 1 / rate."
    )
    # The column stays an unbounded string as migration 0001 made it; only its Python side is typed.
    status: ReviewStatus = Field(default=ReviewStatus.OPEN, sa_type=AutoString, index=True)
    created_at: datetime = _when(index=True)
    deadline_at: datetime = Field(sa_type=UTCDateTime)
    decided_at: datetime | None = _maybe_when()
    claimed_by: int | None = Field(default=None, foreign_key="agents.id")
    claim_expires_at: datetime | None = _maybe_when()
    assigned_to: int | None = Field(
        default=None, foreign_key="agents.id", index=True, description="The agent whose work it is (team leads assign)."
    )
    shadow: Shadow | None = Field(
        default=None,
        sa_type=String(24),
        description="gold or second: a review on a copy whose decision reaches no client and no export.",
    )


class Decision(SQLModel, table=True):
    """What an agent did with a review. Rows are never updated or deleted."""

    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.id", index=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    action: Action = _enum()
    text: str | None = None
    # An edit of a held tool call: the calls as sent, with the agent's arguments.
    tool_calls: list[Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    comment: str = ""
    tags: list[Any] = _json(list, nullable=False)
    from_tier: str | None = None
    to_tier: str | None = Field(default=None, description="Where an escalation sent the review.")
    prompt_key: str | None = Field(
        default=None, max_length=64, index=True, description="Which prompt a closing decision answered (datasets)."
    )
    created_at: datetime = _when()


class PendingDecision(SQLModel, table=True):
    """A decision in its undo window (`HITL_UNDO_SECONDS`): what the agent did, taking effect at `due_at` unless
    the agent undoes it first. The row goes when the decision is made or undone."""

    __tablename__ = "pending_decisions"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.id", unique=True)
    agent_id: int = Field(foreign_key="agents.id")
    action: Action = _enum()
    text: str | None = None
    arguments: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    comment: str = ""
    tags: list[Any] = _json(list, nullable=False)
    created_at: datetime = _when()
    due_at: datetime = Field(sa_type=UTCDateTime, index=True)


class PreferencePair(SQLModel, table=True):
    """(prompt, chosen = the agent's answer, rejected = the model's) from an edit or an override.

    `chosen` and `rejected` are the answers as text, for people; `chosen_message` and `rejected_message` are
    the same answers as assistant messages, with any tool calls structured (`tool_calls`), for training.
    """

    __tablename__ = "preference_pairs"

    id: int | None = Field(default=None, primary_key=True)
    exchange_id: str = Field(foreign_key="exchanges.id", index=True)
    decision_id: int = Field(foreign_key="decisions.id", unique=True)
    prompt: list[Any] = _json(nullable=False)
    chosen: str
    rejected: str
    chosen_message: dict[str, Any] = _json(nullable=False)
    rejected_message: dict[str, Any] = _json(nullable=False)
    action: Action = _enum()
    created_at: datetime = _when(index=True)


class Calibration(SQLModel, table=True):
    """A fitted calibrator, stored so a policy can name it and every exchange can say which one scored it."""

    __tablename__ = "calibrators"

    id: int | None = Field(default=None, primary_key=True)
    method: str = Field(max_length=24)
    params: dict[str, Any] = _json(nullable=False)
    metrics: dict[str, Any] = _json(nullable=False, comment="Figures `hitl calibrate` printed when it fitted this one.")
    labels: int = 0
    created_at: datetime = _when()

    @property
    def version(self) -> str:
        return f"cal-{self.id}"


class AnswerStatus(StrEnum):
    ACTIVE = "active"  # served again for the same request, while the policy's `reuse:` is on
    PAUSED = "paused"  # not served for now; an agent can make it active again
    RETIRED = "retired"  # never served again


class ApprovedAnswer(SQLModel, table=True):
    """An answer an agent approved or wrote, which can be served again for a later request with the same
    normalized conversation, model, tools and structured-output schema (`reuse_key`), within the API key it
    was reviewed for or a group of keys the policy names, while it is active."""

    __tablename__ = "approved_answers"

    id: int | None = Field(default=None, primary_key=True)
    reuse_key: str = Field(index=True, max_length=64)
    api_key_id: int = Field(foreign_key="api_keys.id", index=True)
    review_id: str = Field(foreign_key="reviews.id", unique=True)
    text: str
    status: str = Field(default=AnswerStatus.ACTIVE, max_length=16)
    uses: int = 0
    created_at: datetime = _when()
    changed_at: datetime | None = _maybe_when()
    changed_by: int | None = Field(default=None, foreign_key="agents.id")


class PolicyVersionStatus(StrEnum):
    APPLIED = "applied"  # routes every process (while its base is the policy file in use)
    REFUSED = "refused"  # proposed by `hitl learn`, kept out: its escaped-error bound broke the target
    ROLLED_BACK = "rolled_back"


class PolicyVersion(SQLModel, table=True):
    """A policy `hitl learn` proposed from the labels, applied or refused, and why: the trail of every change
    the learning loop made to routing, and what `hitl policy rollback` steps back through."""

    __tablename__ = "policy_versions"

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(description="The policy's version, as exchanges record it.")
    base: str = Field(index=True, description="The version of the policy file it was made from.")
    text: str = Field(sa_type=sqlalchemy.Text, description="The policy itself (YAML).")
    status: str = Field(max_length=16, index=True)
    reason: str
    figures: dict[str, Any] = _json(nullable=False, comment="Per group: threshold, escaped-error bound, labels.")
    labels: int = 0
    created_at: datetime = _when()
    rolled_back_at: datetime | None = _maybe_when()


class DataRemoval(SQLModel, table=True):
    """The trail of `hitl purge` and `hitl erase`: what was removed, when, and by which criterion (a customer's
    id only as a SHA-256, so the trail itself holds nothing of them)."""

    __tablename__ = "data_removals"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # "purge" or "erase"
    criterion: str = Field(max_length=200)
    removed: dict[str, Any] = _json(nullable=False, comment="Rows removed or emptied, per table.")
    at: datetime = _when()


class EventKind(StrEnum):
    HELD = "held"
    AUDIT = "audit"  # a released answer drawn for the audit queue
    CLAIMED = "claimed"
    UNCLAIMED = "unclaimed"
    ESCALATED = "escalated"
    DECIDED = "decided"
    DELIVERED = "delivered"  # the waiting client got its answer (the decision's, or the placeholder)
    RETRIED = "retried"  # a client's retry of the same request joined the review instead of making another
    ASSIGNED = "assigned"  # given to an agent (detail: to, from); "to" None when the assignment was taken away
    CANCELLED = "cancelled"  # the client cancelled its background response; nobody need decide it
    UNDONE = "undone"  # the agent took a decision back within its undo window (detail: action); nothing was sent


class ReviewEvent(SQLModel, table=True):
    """A review's audit trail: what happened to it, by whom, when. Rows are never updated or deleted, but by
    retention (a purge empties their detail) and erasure (which removes the whole record)."""

    __tablename__ = "review_events"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.id", index=True)
    kind: EventKind = _enum()
    agent_id: int | None = Field(default=None, foreign_key="agents.id")
    detail: dict[str, Any] = _json(dict, nullable=False)
    at: datetime = _when(index=True)


class ConsoleSession(SQLModel, table=True):
    """A signed-in console session, kept server-side so logging out (or a new password) ends it at once: the
    cookie carries a random token, only its SHA-256 is stored."""

    __tablename__ = "console_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    created_at: datetime = _when()
    ended_at: datetime | None = _maybe_when()


class LoginFailure(SQLModel, table=True):
    """A failed console login, counted to throttle password guessing (per username and per address)."""

    __tablename__ = "login_failures"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, max_length=200)
    address: str = Field(index=True, max_length=64)
    at: datetime = _when(index=True)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # every attempt failed; an admin may retry it from the console


class WebhookDelivery(SQLModel, table=True):
    """The webhook outbox: one row per event, written in the transaction that made the event, so an event is
    sent if and only if what it reports was committed. Delivered at least once; `event_id` (the
    `webhook-id` header) is the same on every attempt, so a receiver can drop repeats."""

    __tablename__ = "webhook_outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    api_key_id: int = Field(foreign_key="api_keys.id", index=True)
    url: str = Field(max_length=2000)
    event_type: str = Field(max_length=40)
    payload: dict[str, Any] = _json(nullable=False)
    status: DeliveryStatus = _enum(default=DeliveryStatus.PENDING, index=True)
    attempts: int = 0
    next_attempt_at: datetime = _when(index=True)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    created_at: datetime = _when()
    delivered_at: datetime | None = _maybe_when()


class GoldItem(SQLModel, table=True):
    """A decided review an admin marked gold: its decision is the right one, to score agents against."""

    __tablename__ = "gold_items"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.id", unique=True)
    marked_by: int = Field(foreign_key="agents.id")
    marked_at: datetime = _when()
    active: bool = True


class Notification(SQLModel, table=True):
    """A message to a team's channel (a Slack-compatible incoming webhook, or an e-mail): a review waiting past
    its tier's SLA, or a tier's daily digest. `key` makes each one once, whichever process finds it due; it is
    retried with backoff like the webhook outbox. It carries ids, counts and links, never a conversation's text."""

    __tablename__ = "notifications"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True, description="SHA-256 of what it is about and where it goes.")
    kind: str = Field(max_length=16, description="sla or digest.")
    tier: str = Field(max_length=64)
    review_id: str | None = Field(default=None, max_length=64)
    channel: str = Field(max_length=16, description="webhook or email.")
    target: str = Field(max_length=2000)
    subject: str = Field(max_length=300)
    body: str = Field(sa_type=sqlalchemy.Text)
    status: DeliveryStatus = _enum(default=DeliveryStatus.PENDING, index=True)
    attempts: int = 0
    next_attempt_at: datetime = _when(index=True)
    last_error: str | None = Field(default=None, max_length=300)
    created_at: datetime = _when()
    sent_at: datetime | None = _maybe_when()


class Lease(SQLModel, table=True):
    """A named job that at most one process runs at a time (the webhook sender): the holder renews it; when it
    lapses, another process takes it over."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(default="", max_length=100)
    expires_at: datetime = Field(sa_type=UTCDateTime)
