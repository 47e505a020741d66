"""What one request answers with as its exchange stands: the completion now, or after waiting for a decision,
the deadline's outcome when the wait runs out, and the audit trail's record of what the client got."""

from __future__ import annotations

import logging
from typing import Any

from gateway.conversation import answers
from gateway.conversation.chat import ChatRequest
from gateway.errors import STORAGE_ERRORS, ReviewPending
from gateway.holds import Woken
from gateway.models import DeadlineOutcome, Exchange, ExchangeStatus, Review
from gateway.operations import tracing
from gateway.relay import deadlines, exchanges
from gateway.relay.service import Relay

log = logging.getLogger("hitl.relay")


class Reply:
    def __init__(
        self, relay: Relay, chat: ChatRequest, raw: dict[str, Any], review: Review | None, poll_url: str | None
    ) -> None:
        self.relay = relay
        self.chat = chat
        self.raw = raw
        self.review = review
        self.poll_url = poll_url  # where the client polls for the decision, when held
        self.outcome: DeadlineOutcome | None = None  # set when the wait ran out

    def body(self, exchange: Exchange) -> dict[str, Any]:
        hitl = answers.hitl_block(exchange, self.review, self.poll_url)
        placeholder = self.relay.prompts.get("placeholder").text
        outcome = self.outcome or DeadlineOutcome.PLACEHOLDER
        return answers.delivered(exchange, self.chat, hitl, placeholder, outcome)

    async def final(self, held: Exchange, wait: float) -> dict[str, Any]:
        """What the waiting client gets: the decision, or when the wait runs out the tier's `on_deadline`
        outcome (placeholder, refusal, the candidate, or `ReviewPending` raised as an error). With the database
        down when the wait runs out, the outcome is given from `held` (the exchange as it was stored) unrecorded,
        rather than no answer."""
        assert self.review is not None
        woken = await self._wait(wait)
        exchange = await self._decided(held.id, woken) if woken.woken else None
        if exchange is None or exchange.status == ExchangeStatus.HELD:
            # Its wait ran out (or the process is stopping): recorded with every other running out now.
            self.outcome = self.relay.policy.on_deadline(self.review.tier, self.raw)
            try:
                exchange = await self.relay.deadlines.run_out(held, self.review.id, self.outcome)
            except STORAGE_ERRORS as exc:
                log.warning(
                    "deadline_unrecorded review_id=%s outcome=%s error=%s",
                    self.review.id, self.outcome.value, type(exc).__name__,
                )  # fmt: skip
                exchange = deadlines.ran_out(held, self.outcome)
            if exchange.status not in (ExchangeStatus.HELD, ExchangeStatus.RELEASED_ON_DEADLINE):
                self.outcome = None  # a decision landed between the timeout and now: the client gets it
            else:
                self.relay.metrics.deadline_outcomes.labels(self.outcome.value).inc()
            if exchange.status == ExchangeStatus.HELD and self.outcome == DeadlineOutcome.ERROR:
                self.record_delivery(answers.HitlStatus.PENDING)
                hitl = answers.hitl_block(exchange, self.review, self.poll_url)
                raise ReviewPending(self.review.id, str(self.poll_url), answers.hitl_headers(hitl))
        body = self.body(exchange)
        self.record_delivery(body["hitl"]["status"])
        return body

    async def wait_and_load(self, exchange_id: str, wait: float) -> Exchange:
        """The exchange once a decision wakes the wait, or as it stands when the wait runs out."""
        woken = await self._wait(wait)
        return await self._decided(exchange_id, woken)

    async def _wait(self, wait: float) -> Woken:
        assert self.review is not None
        with tracing.span("hitl.hold", hitl__review_id=self.review.id, hitl__tier=self.review.tier) as held:
            woken = await self.relay.holds.wait(self.review.id, wait)
            held.set_attribute("hitl.decided", woken.woken)
        return woken

    async def _decided(self, exchange_id: str, woken: Woken) -> Exchange:
        if woken.exchange is not None and woken.exchange.id == exchange_id:
            return woken.exchange  # decided in this process: the decision handed over the exchange it wrote
        return await exchanges.load(self.relay.sessions, exchange_id)

    def record_delivery(self, status: str) -> None:
        """Write what the waiting client got to the review's audit trail, off the request path: the
        write must not stand between a decision and the client."""
        assert self.review is not None
        self.relay.deliveries.record(self.review.id, status, self.outcome)
