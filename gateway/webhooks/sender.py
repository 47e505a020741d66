"""The webhook sender: the delivery loop of whichever process holds the `webhooks` lease.

Every `poll_interval` it takes (or renews) the lease and sends the outbox's due events, each endpoint on its own
(several at once; one that hangs delays only itself) and oldest first, an event backing off holding back the
later ones of its endpoint (so a review's events arrive in order). Each is signed the Standard Webhooks way:
`webhook-id` (the event's id, the same on every attempt), `webhook-timestamp` (this attempt's time) and
`webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with the API key's `whsec_` secret, by
the `standardwebhooks` library). A 2xx marks it delivered. Anything else, or no answer within `timeout`,
schedules another attempt after an exponential backoff with jitter; after `max_attempts` it is `failed`,
listed in the console, where an admin can send it again.

Delivered at least once: the row is marked after the endpoint's 2xx, so a sender killed between the two sends
the event again once the lease passes to another process. Before each delivery the sender checks that its
lease has at least two thirds left (renewing it otherwise), so a slow endpoint cannot make two senders run
at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from standardwebhooks import Webhook

from gateway import http, leases
from gateway.clock import Clock
from gateway.models import ApiKey, DeliveryStatus, WebhookDelivery
from gateway.operations.metrics import Metrics
from gateway.settings import WebhookSettings

log = logging.getLogger("hitl.webhooks")
LEASE = "webhooks"
_BATCH = 50  # events of one endpoint per round
_ENDPOINTS_AT_ONCE = 16  # endpoints served concurrently; each one gets one event at a time


def signed_headers(secret: str, event_id: str, body: str, now: datetime) -> dict[str, str]:
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, now, body),
        "content-type": "application/json",
        "user-agent": "hitl-gateway-webhooks",
    }


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before attempt `attempts + 1`: doubling from `base`, capped, with jitter so that many failed
    events do not all come back at once (half fixed, half random)."""
    delay: float = min(cap, base * 2.0 ** (attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class Sender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        settings: WebhookSettings,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._client = client
        self._settings = settings
        self._clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held_until: datetime | None = None  # while this process holds the lease
        self._next_try: datetime | None = None  # when a process without the lease may try to take it again

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except SQLAlchemyError as exc:  # the database is away for a moment; the next round tries again
                log.warning("webhook delivery round failed: %s", type(exc).__name__)
            await asyncio.sleep(self._settings.poll_interval)

    async def _hold(self) -> bool:
        """Whether this process may deliver now. The lease is renewed once a third of it has passed, and a
        process without it asks again only every third of a lease: one short write every few seconds per
        process, not one a round."""
        now, seconds = self._clock.now(), self._settings.lease
        if self._held_until is not None and now < self._held_until - timedelta(seconds=seconds * 2 / 3):
            return True
        if self._held_until is None and self._next_try is not None and now < self._next_try:
            return False
        if await leases.hold(self._sessions, LEASE, self.holder, seconds, now):
            self._held_until = now + timedelta(seconds=seconds)
            return True
        self._held_until, self._next_try = None, now + timedelta(seconds=seconds / 3)
        return False

    async def deliver_due(self) -> int:
        """Send every due event while this process holds the lease; how many were sent (2xx or not). Each
        endpoint is served on its own, several at once: one that hangs delays only its own events."""
        if not await self._hold():
            return 0
        async with self._sessions() as session:
            pending = col(WebhookDelivery.status) == DeliveryStatus.PENDING
            urls = (await session.exec(select(WebhookDelivery.url).where(pending).distinct())).all()
        at_once = asyncio.Semaphore(_ENDPOINTS_AT_ONCE)

        async def serve(url: str) -> int:
            async with at_once:
                return await self._deliver_to(url)

        return sum(await asyncio.gather(*(serve(url) for url in urls)))

    async def _deliver_to(self, url: str) -> int:
        """One endpoint's pending events, oldest first, one at a time. The first that is not due yet (backing
        off) or that fails stops the rest, so an endpoint gets a review's events in the order they happened."""
        async with self._sessions() as session:
            queued = (
                await session.exec(
                    select(WebhookDelivery, ApiKey.webhook_secret)
                    .join(ApiKey, col(ApiKey.id) == col(WebhookDelivery.api_key_id))
                    .where(col(WebhookDelivery.status) == DeliveryStatus.PENDING, col(WebhookDelivery.url) == url)
                    .order_by(col(WebhookDelivery.id))
                    .limit(_BATCH)
                )
            ).all()
        sent = 0
        for delivery, secret in queued:
            if delivery.next_attempt_at > self._clock.now():
                break  # backing off: the later events wait behind it
            if sent and not await self._hold():
                break  # the lease went elsewhere (this process stalled): the new holder goes on
            delivered = await self._deliver(delivery, secret)
            sent += 1
            if not delivered:
                break
        return sent

    async def _deliver(self, delivery: WebhookDelivery, secret: str | None) -> bool:
        """One attempt; whether the endpoint took it."""
        status: int | None = None
        if not secret:
            error: str | None = "the API key has no webhook secret"
        else:
            body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
            try:
                headers = signed_headers(secret, delivery.event_id, body, self._clock.now())
            except ValueError:  # a secret set by hand that is not base64: nothing can be signed with it
                await self._settle(delivery, None, "the API key's webhook secret is not a valid whsec_ secret")
                return False
            try:
                response = await self._client.post(
                    delivery.url, content=body.encode(), headers=headers, timeout=self._settings.timeout
                )
                status = response.status_code
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{http.failure(exc)}: no answer"
        await self._settle(delivery, status, error)
        return error is None

    async def _settle(self, delivery: WebhookDelivery, status: int | None, error: str | None) -> None:
        now = self._clock.now()
        attempts = delivery.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "last_status": status, "last_error": error}
        if error is None:
            values.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
            result = "delivered"
        elif attempts >= self._settings.max_attempts or not delivery.url:
            values.update(status=DeliveryStatus.FAILED)
            log.warning("webhook %s failed for good after %d attempts: %s", delivery.event_id, attempts, error)
            result = "failed"
        else:
            wait = backoff(attempts, self._settings.backoff_base, self._settings.backoff_max)
            values.update(next_attempt_at=now + timedelta(seconds=wait))
            result = "retry"
        if self._metrics is not None:
            self._metrics.webhook_deliveries.labels(result).inc()
        async with self._sessions() as session:
            # Guarded by the attempt count read: a retry an admin asked for meanwhile is not overwritten.
            await session.exec(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery.id, col(WebhookDelivery.attempts) == delivery.attempts)
                .where(col(WebhookDelivery.status) == DeliveryStatus.PENDING)
                .values(**values)
            )
            await session.commit()
