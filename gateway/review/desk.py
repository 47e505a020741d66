"""The review desk: the one service the console (and anything else that reviews) calls.

Made once in the app's lifespan with everything it needs (sessions, the hold hub that wakes waiting
clients, the tier rules, the claim lease, the clock), so callers pass only what the agent did:
`desk.decide(review_id, agent, Action.EDIT, text=...)`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.errors import Conflict, Forbidden, GatewayError, InvalidRequest, NotFound, StorageUnavailable
from gateway.holds import HoldHub
from gateway.models import (
    Action,
    Agent,
    ApprovedAnswer,
    Exchange,
    PendingDecision,
    Review,
    ReviewKind,
    ReviewStatus,
    wellformed_id,
)
from gateway.operations.metrics import Metrics
from gateway.review import (
    approved_answers,
    assignments,
    claims,
    decisions,
    history,
    logins,
    precedents,
    progress,
    queue,
    record,
    shadows,
    undo,
)
from gateway.review import sessions as console_sessions
from gateway.review.decisions import Decided
from gateway.review.history import HistoryFilter, HistoryRow
from gateway.review.logins import LoginLimits
from gateway.review.precedents import Precedent
from gateway.review.queue import QueueFilter, QueueView
from gateway.review.record import ReviewRecord
from gateway.review.sandbox import Sandbox, TooSlow
from gateway.review.tiers import Tiers
from gateway.settings import QualitySettings


@dataclass
class BulkApproval:
    decided: list[Decided] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (review id, why)


log = logging.getLogger("hitl.review")


def _known(review_id: str) -> str:
    """The id, if it could name a review at all; anything else is a 404 before the database sees it."""
    if not wellformed_id(review_id):
        raise NotFound(f"No review with id {review_id!r}.")
    return review_id


@dataclass(frozen=True)
class ReviewDesk:
    sessions: async_sessionmaker[AsyncSession]
    holds: HoldHub
    tiers: Tiers
    lease: float  # seconds a claim lasts unless renewed
    clock: Clock
    logins: LoginLimits
    sandbox: Sandbox  # where checks of an edit against the request's schemas, and diffs, run with a time limit
    undo_seconds: float = 0.0  # a console decision's undo window
    policy_sla: dict[str, float] = field(default_factory=dict)  # tier -> target wait in seconds
    metrics: Metrics | None = None
    quality: QualitySettings = field(default_factory=QualitySettings)  # gold items and second reviews
    draw: Callable[[], float] = random.random  # the chance draws of `shadows.after_decision`

    # -- who may do what ---------------------------------------------------------------------------------

    def may_decide(self, agent: Agent, tier: str) -> bool:
        return self.tiers.may_decide(agent.role, tier)

    def first_queue(self, agent: Agent, counts: dict[str, int] | None = None) -> str:
        """The tab the queue opens on: of the tiers this agent may decide, the one with the most open reviews
        (the lowest on a tie, and when none has any)."""
        queues = self.tiers.queues
        mine = [tier for tier in queues if self.may_decide(agent, tier)] or queues[:1]
        found = counts or {}
        return max(mine, key=lambda tier: (found.get(tier, 0), -mine.index(tier)))

    def sla(self, tier: str) -> float | None:
        """The policy's target wait for a review of `tier`, in seconds, if it sets one."""
        return self.policy_sla.get(tier)

    # -- claims ------------------------------------------------------------------------------------------

    async def claim(self, review_id: str, agent: Agent) -> Review:
        """Claim the review, or renew this agent's claim; `Conflict` when someone else holds it, `Forbidden`
        when the agent may not decide it (a claim locks a review: only those who may decide it may take it)."""
        review = await self.review(_known(review_id))
        if review is None:
            raise NotFound(f"No review with id {review_id!r}.")
        if not self.tiers.may_decide_review(agent.role, review):
            raise Forbidden(f"The {agent.role} role cannot claim reviews in the {review.tier!r} tier.")
        return await claims.claim(self.sessions, review_id, agent, self.lease, self.clock)

    async def release(self, review_id: str, agent: Agent) -> bool:
        if not wellformed_id(review_id):
            return False
        return await claims.release(self.sessions, review_id, agent, self.clock)

    async def next(self, agent: Agent, tier: str, skip: str | None = None) -> Review | None:
        """Claim the most urgent review of `tier` nobody else holds (but `skip`); None when there is none or
        the agent may not decide that tier."""
        if tier not in self.tiers.queues or not self.may_decide(agent, tier):
            return None
        return await claims.next_review(self.sessions, agent, tier, self.lease, self.clock, skip)

    # -- decisions ---------------------------------------------------------------------------------------

    async def decide(
        self,
        review_id: str,
        agent: Agent,
        action: Action,
        *,
        text: str | None = None,
        arguments: dict[str, str] | None = None,
        comment: str = "",
        tags: list[str] | None = None,
    ) -> Decided:
        """Approve, edit, override (or, with `Action.ESCALATE`, escalate with `comment` as the reason), at once.
        An edit of held tool calls gives `arguments` (call id -> JSON) instead of `text`."""
        _known(review_id)
        if action == Action.ESCALATE:
            return await self.escalate(review_id, agent, comment, tags=tags)
        async with self.sessions() as session:
            return await self._make(session, review_id, agent, action, text, arguments, comment, tags)

    async def decide_undoably(
        self,
        review_id: str,
        agent: Agent,
        action: Action,
        *,
        text: str | None = None,
        arguments: dict[str, str] | None = None,
        comment: str = "",
        tags: list[str] | None = None,
    ) -> Decided | PendingDecision:
        """A console decision: checked now, made when its undo window closes (`undo.py`); at once when undo is
        off, or when the waiting client's deadline comes first. An escalation too (its reason is `comment`)."""
        _known(review_id)
        if self.undo_seconds <= 0:
            return await self.decide(
                review_id, agent, action, text=text, arguments=arguments, comment=comment, tags=tags
            )
        async with self.sessions() as session:
            now = self.clock.now()
            checked = comment if action == Action.ESCALATE else text
            review, _ = await decisions.check(
                session, self.tiers, self.sandbox, review_id=review_id, agent=agent, action=action,
                text=checked, arguments=arguments, tags=tags,
            )  # fmt: skip
            deadline = review.deadline_at
            if not (review.kind == ReviewKind.HOLD and now < deadline <= now + self._undo_window):
                return await undo.defer(
                    session, review, agent, now, self.undo_seconds, self.lease,
                    action=action, text=text, arguments=arguments, comment=comment, tags=tags or [],
                )  # fmt: skip
        # The client would time out within the window: answered now, with no undo.
        return await self.decide(review_id, agent, action, text=text, arguments=arguments, comment=comment, tags=tags)

    @property
    def _undo_window(self) -> timedelta:
        return timedelta(seconds=self.undo_seconds)

    async def _make(
        self,
        session: AsyncSession,
        review_id: str,
        agent: Agent,
        action: Action,
        text: str | None,
        arguments: dict[str, str] | None,
        comment: str,
        tags: list[str] | None,
    ) -> Decided:
        decided = await decisions.decide(
            session,
            self.tiers,
            self.clock.now(),
            self.sandbox,
            review_id=review_id,
            agent=agent,
            action=action,
            text=text,
            arguments=arguments,
            comment=comment,
            tags=tags,
        )
        # The waiting client first; the agent's page can wait a round trip.
        self.holds.notify(review_id, decided.exchange)
        await session.refresh(decided.review)
        try:
            await shadows.after_decision(session, decided.review, decided.exchange, agent, self.tiers, self.quality,
                                         self.draw, self.clock.now())  # fmt: skip
        except SQLAlchemyError as exc:  # the decision stands, made and delivered; only a check was not drawn
            await session.rollback()
            log.warning("no gold item or second review drawn after a decision (%s)", type(exc).__name__)
        if self.metrics is not None:
            self.metrics.decisions.labels(decided.decision.action.value).inc()
            waited = (decided.decision.created_at - decided.review.created_at).total_seconds()
            self.metrics.time_to_decision.observe(max(waited, 0.0))
        return decided

    async def undo(self, review_id: str, agent: Agent) -> PendingDecision | None:
        """Take back this agent's decision on the review while its window is open; what it was (the draft to
        restore), or None when there is nothing to take back."""
        _known(review_id)
        async with self.sessions() as session:
            return await undo.take_back(session, review_id, agent, self.clock.now())

    async def pending(self, review_id: str) -> PendingDecision | None:
        async with self.sessions() as session:
            return await undo.pending(session, review_id)

    async def settle(self) -> int:
        """Make every decision whose undo window has closed (any process may; one makes each). How many."""
        async with self.sessions() as session:
            found = await undo.due(session, self.clock.now())
            agents = {row.agent_id: await session.get(Agent, row.agent_id) for row in found}
        made = 0
        for row in found:
            agent = agents[row.agent_id]
            assert row.id is not None and agent is not None
            try:
                async with self.sessions() as session:
                    if not await undo.settled(session, row.id):
                        continue  # made by another process, or undone
                    if row.action == Action.ESCALATE:
                        await decisions.escalate(
                            session, self.tiers, self.clock.now(),
                            review_id=row.review_id, agent=agent, reason=row.comment, tags=row.tags,
                        )  # fmt: skip
                        if self.metrics is not None:
                            self.metrics.decisions.labels(Action.ESCALATE.value).inc()
                    else:
                        await self._make(
                            session, row.review_id, agent, row.action, row.text, row.arguments, row.comment, row.tags
                        )
                    made += 1
            except (TooSlow, StorageUnavailable):
                continue  # a passing fault (a loaded machine, the database away): it stands, and is tried again
            except GatewayError as exc:
                # It can no longer be made (decided meanwhile, say): drop it, and say so in the log (the error's
                # kind only: its message may quote the model's words).
                log.warning("a decision kept for its undo window could not be made (%s)", type(exc).__name__)
                async with self.sessions() as session:
                    await undo.settled(session, row.id)
                    await session.commit()
        return made

    async def run_settling(self, interval: float) -> None:
        """The loop that makes decisions when their undo windows close."""
        while True:
            try:
                await self.settle()
            except Exception:  # noqa: BLE001 (a loop that dies would leave decisions unmade)
                log.exception("settling decisions failed; trying again")
            await asyncio.sleep(interval)

    async def escalate(self, review_id: str, agent: Agent, reason: str, *, tags: list[str] | None = None) -> Decided:
        _known(review_id)
        async with self.sessions() as session:
            escalated = await decisions.escalate(
                session, self.tiers, self.clock.now(), review_id=review_id, agent=agent, reason=reason, tags=tags
            )
        if self.metrics is not None:
            self.metrics.decisions.labels(Action.ESCALATE.value).inc()
        return escalated

    # -- what the console shows ---------------------------------------------------------------------------

    async def queue(self, wanted: QueueFilter) -> QueueView:
        async with self.sessions() as session:
            return await queue.view(session, wanted, self.clock.now())

    # -- team work ---------------------------------------------------------------------------------------

    async def assign(self, review_ids: list[str], to_username: str | None, by: Agent) -> list[Review]:
        """Give reviews to an agent (None: to nobody); all or none, each change in its review's trail."""
        for review_id in review_ids:
            _known(review_id)
        async with self.sessions() as session:
            to = None
            if to_username:
                to = (await session.exec(select(Agent).where(col(Agent.username) == to_username))).first()
                if to is None:
                    raise NotFound(f"No agent called {to_username!r}.")
            return await assignments.assign(session, self.tiers, self.clock.now(), review_ids, to, by)

    async def approve_many(self, review_ids: list[str], agent: Agent) -> BulkApproval:
        """Approve each review as it stands, one decision each (through `decide`, so each client is answered and
        each trail written). A review that cannot be (not a plain text answer this agent may decide, held by
        someone else, decided meanwhile) is left out and said so; `InvalidRequest` when none can be."""
        records = [await self.record(review_id) for review_id in dict.fromkeys(review_ids)]
        if not records:
            raise InvalidRequest("Choose at least one review.", param="review_ids")
        done = BulkApproval()
        for found in records:
            problem = self.bulk_problem(found, agent)
            if problem is None:
                try:
                    done.decided.append(await self.decide(found.review.id, agent, Action.APPROVE))
                    continue
                except Conflict as exc:  # taken or decided between the look and the decision
                    problem = exc.message
            done.left_out.append((found.review.id, problem))
        if not done.decided:
            review_id, problem = done.left_out[0]
            raise InvalidRequest(f"Review {review_id}: {problem}", param="review_ids")
        return done

    def bulk_problem(self, found: ReviewRecord, agent: Agent) -> str | None:
        """Why a review cannot be approved in bulk, or None: only open text answers the agent may decide, that
        nobody else holds."""
        if found.review.status != ReviewStatus.OPEN:
            return "it is decided already"
        if not self.tiers.may_decide_review(agent.role, found.review):
            return f"the {agent.role} role cannot decide the {found.review.tier!r} tier"
        if found.tool_calls():
            return "it calls tools: decide it on its own page"
        expires = found.review.claim_expires_at
        if found.review.claimed_by not in (None, agent.id) and expires is not None and expires > self.clock.now():
            return f"{found.holder_name() or 'another agent'} has it open"
        return None

    async def assigned_count(self, agent: Agent) -> int:
        assert agent.id is not None
        async with self.sessions() as session:
            return await queue.assigned_count(session, agent.id)

    async def progress_today(self) -> dict[str, int]:
        async with self.sessions() as session:
            return await progress.today(session, self.clock.now())

    async def queue_counts(self) -> dict[str, int]:
        async with self.sessions() as session:
            return await queue.counts(session)

    async def queue_version(self) -> int:
        async with self.sessions() as session:
            return await queue.version(session)

    async def precedents(self, found: ReviewRecord) -> list[Precedent]:
        """What agents decided before on the same question as this review's."""
        async with self.sessions() as session:
            return await precedents.earlier(session, found.exchange, found.review.id)

    async def mark_gold(self, review_id: str, admin: Agent) -> None:
        """Make a decided review a gold item (`shadows.mark`): agents are then scored against its decision."""
        async with self.sessions() as session:
            await shadows.mark(session, _known(review_id), admin, self.clock.now())

    async def unmark_gold(self, review_id: str) -> None:
        async with self.sessions() as session:
            await shadows.unmark(session, _known(review_id))

    async def is_gold(self, review_id: str) -> bool:
        async with self.sessions() as session:
            return await shadows.is_gold(session, _known(review_id))

    async def approved_answer(self, review_id: str) -> ApprovedAnswer | None:
        """The answer this review's decision left to be served again, if it left one."""
        async with self.sessions() as session:
            return await approved_answers.of_review(session, review_id)

    async def active_answer(self, exchange: Exchange, review_id: str, share: list[list[str]]) -> ApprovedAnswer | None:
        """The approved answer a request like this exchange's would be served now (`share`: the policy's key
        groups), unless it is the one this very review left."""
        async with self.sessions() as session:
            key = approved_answers.reuse_key(exchange.request, exchange.model)
            found = await approved_answers.find(session, key, exchange.api_key_id, share)
        return found if found is not None and found.review_id != review_id else None

    async def set_answer_status(self, review_id: str, status: str, agent: Agent) -> ApprovedAnswer:
        """Pause, activate or retire the answer a review's decision left (any agent may)."""
        async with self.sessions() as session:
            answer = await approved_answers.of_review(session, review_id)
            if answer is None or answer.id is None:
                raise NotFound("This review left no answer to serve again.")
            return await approved_answers.set_status(session, answer.id, status, agent, self.clock.now())

    async def record(self, review_id: str) -> ReviewRecord:
        async with self.sessions() as session:
            return await record.load(session, _known(review_id))

    async def candidate_text(self, review_id: str) -> str:
        """The text of the answer a review is about that an agent may change (what an edit is compared with): all
        of it, or what followed the part a progressive stream had sent."""
        async with self.sessions() as session:
            query = (
                select(Exchange.candidate_text, Exchange.released_chars)
                .join(Review, col(Review.exchange_id) == col(Exchange.id))
                .where(col(Review.id) == _known(review_id))
            )
            found = (await session.exec(query)).first()
        if found is None:
            raise NotFound(f"No review with id {review_id!r}.")
        text, sent = found
        return text[sent or 0 :]

    async def review(self, review_id: str) -> Review | None:
        if not wellformed_id(review_id):
            return None
        async with self.sessions() as session:
            return await session.get(Review, review_id)

    def waiting(self, review_id: str) -> int:
        """How many clients wait on the review in this process."""
        return self.holds.waiting(review_id)

    async def history(self, wanted: HistoryFilter) -> list[HistoryRow]:
        async with self.sessions() as session:
            return await history.search(session, wanted)

    async def agent_names(self) -> list[str]:
        async with self.sessions() as session:
            return await history.agent_names(session)

    # -- agents -------------------------------------------------------------------------------------------

    async def agent(self, agent_id: int) -> Agent | None:
        """The agent, if the account still exists and is active."""
        async with self.sessions() as session:
            found = await session.get(Agent, agent_id)
        return found if found is not None and found.active else None

    async def start_session(self, agent: Agent) -> str:
        """A console session for a signed-in agent; the token its cookie carries."""
        async with self.sessions() as session:
            return await console_sessions.start(session, agent, self.clock.now())

    async def session_agent(self, token: str, max_age: float) -> Agent | None:
        """Whose live session `token` is (None once it ended, ran past `max_age`, or the account is disabled)."""
        async with self.sessions() as session:
            return await console_sessions.agent_of(session, token, self.clock.now(), max_age)

    async def end_session(self, token: str) -> None:
        async with self.sessions() as session:
            await console_sessions.end(session, token, self.clock.now())

    async def sign_in(self, username: str, password: str, address: str) -> Agent | None:
        async with self.sessions() as session:
            return await logins.sign_in(session, self.logins, username, password, address, self.clock.now())
