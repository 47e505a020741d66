"""The request path as one service, built once at start-up like the review desk: a route hands it a parsed
request and gets back the stored exchange (and its review when held); routes never see the runtime."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.conversation import answers, chunks, toolcalls
from gateway.conversation import chat as chat_request
from gateway.conversation.chat import ChatRequest
from gateway.conversation.upstream import Upstream, Upstreams
from gateway.errors import GatewayError, InvalidRequest
from gateway.holds import HoldHub
from gateway.inserts import Inserts
from gateway.models import Exchange, ExchangeStatus, Review, Route
from gateway.operations import logs, tracing
from gateway.operations.metrics import Metrics
from gateway.policy import Policy, Routing
from gateway.prompt_templates import Prompts
from gateway.relay import exchanges, retries
from gateway.relay.deadlines import Deadlines
from gateway.relay.progressive import Progress
from gateway.relay.retries import Identity, InFlight
from gateway.relay.trail import Deliveries
from gateway.review import approved_answers
from gateway.scoring.calibrator import Calibrators
from gateway.scoring.scorer import Scorer
from gateway.settings import Settings

log = logging.getLogger("hitl.relay")


class Relay:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        inserts: Inserts,
        upstreams: Upstreams,
        policy: Policy,
        calibrators: Calibrators,
        holds: HoldHub,
        prompts: Prompts,
        scorer: Scorer,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.inserts = inserts  # released exchanges are written through it, the cheapest way the database has
        self.upstreams = upstreams
        self.policy = policy  # with `calibrators`, what routes; `use` swaps both at once
        self.calibrators = calibrators
        self.holds = holds
        self.prompts = prompts
        self.scorer = scorer
        self.clock = clock
        self.metrics = metrics
        self.in_flight = InFlight()
        self.deadlines = Deadlines(sessions)  # waits that run out together are recorded together
        self.deliveries = Deliveries(sessions, self.later)  # so is what their clients were given
        self.pending: set[asyncio.Task[Any]] = set()

    def use(self, policy: Policy, calibrators: Calibrators) -> None:
        """Route by another policy version from now on (a request already scoring keeps the one it began with)."""
        self.policy, self.calibrators = policy, calibrators

    def wait_seconds(self, chat: ChatRequest) -> float:
        """How long a held request waits for a decision: what it asked for, within the configured limit."""
        hold = self.settings.hold
        asked = chat.hitl.wait if chat.hitl and chat.hitl.wait is not None else None
        if asked is None:
            return min(hold.default_wait, hold.max_wait)
        if asked > hold.max_wait:
            raise InvalidRequest(f"hitl.wait may be at most {hold.max_wait:g} seconds.", param="hitl.wait")
        return asked

    async def repeated(self, identity: Identity) -> Exchange | None:
        """The exchange this request repeats (a retry, or the same Idempotency-Key), if it is one."""
        window = self.settings.idempotency_window
        if identity.sign is None or window <= 0:
            return None
        joined = await self.in_flight.joined(identity)
        if joined is not None:
            return retries.same_body(identity, await exchanges.load(self.sessions, joined))
        since = self.clock.now() - timedelta(seconds=window)
        async with self.sessions() as session:
            return await retries.stored(session, identity, since)

    async def proposed(
        self, identity: Identity, incoming: exchanges.Incoming, upstream: Upstream, wait: float
    ) -> tuple[Exchange, Review | None]:
        """`propose`, with a repeat of this request that arrives meanwhile in this process joining it."""
        async with self.in_flight.taking(identity) as taken:
            exchange, review = await self.propose(incoming, upstream, wait)
            taken.set_result(exchange.id)
        return exchange, review

    async def propose(
        self, incoming: exchanges.Incoming, upstream: Upstream, wait: float
    ) -> tuple[Exchange, Review | None]:
        """Ask the upstream, score the candidate, route it by policy and store the exchange (and its review when
        held) before the client hears anything. A failed upstream call is stored too, then raised as it was."""
        return await self._proposed(incoming, upstream, wait, None)

    async def propose_progressively(
        self,
        identity: Identity,
        incoming: exchanges.Incoming,
        upstream: Upstream,
        wait: float,
        release: Callable[[str], None],
    ) -> tuple[Exchange, Review | None]:
        """`proposed` for a streamed text answer the policy releases chunk by chunk: each chunk that clears the
        release band is handed to `release` as the upstream writes it; the whole answer is then stored as usual,
        held with what was released fixed when a chunk did not clear the band. A repeat of the request that
        arrives meanwhile in this process joins it."""
        async with self.in_flight.taking(identity) as taken:
            exchange, review = await self._proposed(incoming, upstream, wait, release)
            taken.set_result(exchange.id)
        return exchange, review

    async def _proposed(
        self,
        incoming: exchanges.Incoming,
        upstream: Upstream,
        wait: float,
        release: Callable[[str], None] | None,
    ) -> tuple[Exchange, Review | None]:
        chat, raw = incoming.chat, incoming.raw
        policy, calibrators = self.policy, self.calibrators  # one version for the whole exchange
        started = time.perf_counter()
        asked = chat_request.upstream_body(raw, chat, upstream.logprobs)
        measured = self.metrics.upstream(upstream.name)
        progress = None if release is None else Progress(policy, calibrators, self.scorer, chat.model, release)
        try:
            with tracing.upstream(upstream.provider, upstream.model, upstream.name) as called:
                if chat.stream and upstream.streams and chat.n == 1:
                    response = await self._streamed(upstream, asked, progress)
                else:
                    response = await upstream.complete(asked)
                tracing.answered(called, response)
        except GatewayError as exc:
            sent = progress.sent if progress is not None else ""
            failure = exchanges.Failure(exc.failure or "upstream_error", exc.upstream_status, _since(started), sent)
            self.metrics.upstream_errors.labels(measured, failure.kind).inc()
            self.metrics.exchanges.labels(incoming.dialect, self.metrics.model(chat.model), "failed").inc()
            await self._record_failure(incoming, upstream, failure)
            raise  # the client gets the same OpenAI-shaped error as before
        upstream_ms = _since(started)
        self.metrics.upstream_seconds.labels(measured).observe(upstream_ms / 1000)
        calls = toolcalls.found(response)
        scoring = time.perf_counter()
        candidate_text = answers.candidate_text(response)
        with tracing.span("hitl.score") as scored:
            score = await self.scorer.score(upstream, chat.model, asked, response, candidate_text, calls, calibrators)
            self.metrics.scoring_seconds.observe(time.perf_counter() - scoring)
            if any(call.malformed for call in calls):
                score.signals["missing"] = sorted({*score.signals["missing"], toolcalls.MALFORMED})
            group = score.signals["calibration_group"]
            routing = policy.route(score.confidence, raw, score.signals["missing"], calls, group)
            if progress is not None:
                routing = _progressed(policy, raw, routing, progress)
            explained = f"{score.signals['decided_by']}; {score.signals['calibrator']}; {routing.tier or 'release'}"
            tracing.evaluated(scored, "hitl.confidence", score.confidence, routing.route.value, explained)
        released = progress.released if progress is not None and progress.released else None
        candidate = exchanges.Candidate(
            response=response, score=score, routing=routing, upstream_ms=upstream_ms, released_chars=released
        )
        reusable = routing.route == Route.HOLD and routing.rule is None and not calls and released is None
        if policy.spec.reuse is not None and reusable:
            candidate = await self._reused(incoming, candidate, policy.spec.reuse.share)
        audit = self.settings.audit
        drawn = candidate.routing.route == Route.RELEASE and random.random() < audit.rate
        exchange, review = await exchanges.record(
            self.inserts,
            self.sessions,
            incoming,
            upstream_model=upstream.model,
            candidate=candidate,
            policy_version=policy.version,
            calibrator=score.signals["calibrator"],
            wait=wait,
            audit=exchanges.Audit(audit.tier, audit.rate) if drawn else None,
        )
        logs.bind(exchange_id=exchange.id, review_id=review.id if review else None)
        trace.get_current_span().set_attributes(
            {"hitl.exchange_id": exchange.id, "hitl.status": str(exchange.status)}
            | ({"hitl.review_id": review.id} if review else {})
        )
        reused = exchange.status == ExchangeStatus.REUSED
        outcome = "held" if review is not None else "reused" if reused else "audit" if drawn else "released"
        self.metrics.exchanges.labels(incoming.dialect, self.metrics.model(chat.model), outcome).inc()
        return exchange, review

    async def _streamed(self, upstream: Upstream, asked: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        """The answer as the upstream streams it, put together; released chunk by chunk on the way when `progress`
        says so."""
        assembled = chunks.Assembled(upstream.name)
        async for chunk in upstream.stream(asked):
            assembled.add(chunk)
            if progress is not None:
                progress.advance(assembled)
        response = assembled.completion()  # a stream cut short raises here: no answer, whatever was released
        if progress is not None:
            progress.finish(assembled)
        return response

    async def _reused(
        self, incoming: exchanges.Incoming, candidate: exchanges.Candidate, share: list[list[str]]
    ) -> exchanges.Candidate:
        """The candidate, or instead, when an agent approved or wrote an answer to the same request that is still
        active, that answer, released as reused (its own audit draw like any release)."""
        key = approved_answers.reuse_key(incoming.raw, incoming.chat.model)
        async with self.sessions() as session:
            found = await approved_answers.find(session, key, incoming.api_key_id, share)
        if found is None or found.id is None:
            return candidate
        self.later(self._count_use(found.id))
        signals = {**candidate.score.signals, "reused": {"answer_id": found.id, "review_id": found.review_id}}
        reason = f"reused the answer approved in review {found.review_id} (the fresh one: {candidate.routing.reason})"
        return replace(
            candidate,
            response=answers.replaced(candidate.response, found.text),
            score=replace(candidate.score, signals=signals),
            routing=Routing(Route.RELEASE, None, reason),
            status=ExchangeStatus.REUSED,
        )

    async def _count_use(self, answer_id: int) -> None:
        async with self.sessions() as session:
            await approved_answers.used(session, answer_id)
            await session.commit()

    async def _record_failure(
        self, incoming: exchanges.Incoming, upstream: Upstream, failure: exchanges.Failure
    ) -> None:
        """A failed upstream call leaves a `failed` exchange and one structured log line, with the request id."""
        exchange = await exchanges.record_failure(
            self.sessions,
            incoming,
            upstream_model=upstream.model,
            policy_version=self.policy.version,
            failure=failure,
        )
        logs.bind(exchange_id=exchange.id)
        log.warning(
            "upstream_failed request_id=%s exchange_id=%s upstream=%s kind=%s status=%s latency_ms=%.0f "
            "released_chars=%d",
            incoming.request_id,
            exchange.id,
            upstream.name,
            failure.kind,
            failure.upstream_status if failure.upstream_status is not None else "-",
            failure.upstream_ms,
            len(failure.sent),
        )

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping off the request path (e.g. an audit-trail write after the client has its
        answer); the lifespan waits for whatever is still running when the app stops."""
        task = asyncio.get_running_loop().create_task(work)
        self.pending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    def outlive_client(self, task: asyncio.Task[Any]) -> None:
        """Let a request's own work run to its end if its client hangs up (a streamed answer's upstream call and
        stored exchange); the lifespan waits for it like the rest. Its failure is the request's to report (a
        failed upstream call is recorded and logged where it happens), so it is only taken here, not logged."""
        self.pending.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled():
            task.exception()

    async def drain(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)


def _progressed(policy: Policy, request: dict[str, Any], routing: Routing, progress: Progress) -> Routing:
    """The whole answer's route once it streamed progressively: released when every chunk cleared the band (the
    client has it all), held when one did not (whatever the whole scored: what was released stands, the rest
    waits), as routed when a tool call stopped the flow."""
    if progress.stopped is not None:
        if routing.route == Route.HOLD:
            why = f"progressive: {progress.released} characters sent, the rest held; {routing.reason}"
            return replace(routing, reason=why)
        confidence, group = progress.stopped
        tier = policy.route(confidence, request, [], (), group).tier or policy.spec.unscored.tier or policy.tiers[0]
        shown = "unscored" if confidence is None else f"{confidence:.3f}"
        why = f"progressive: the chunk after {progress.released} characters scored {shown}, below release -> {tier}"
        return Routing(Route.HOLD, tier, why)
    if progress.by_tool_call or not progress.released or routing.route == Route.RELEASE:
        return routing  # as buffered: nothing was sent (an empty answer too), or a tool call stopped the flow
    return Routing(Route.RELEASE, None, f"progressive: every chunk cleared the release band ({routing.reason})")


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
