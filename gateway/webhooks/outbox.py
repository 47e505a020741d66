"""The outbox as operators see it: counts by status, the deliveries that failed for good, and a retry."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.errors import Conflict, NotFound
from gateway.models import DeliveryStatus, WebhookDelivery


@dataclass(frozen=True)
class Outbox:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock

    async def counts(self) -> dict[str, int]:
        async with self.sessions() as session:
            rows = await session.exec(
                select(WebhookDelivery.status, func.count()).group_by(col(WebhookDelivery.status))
            )
            found = {str(status): int(count) for status, count in rows.all()}
        return {str(status): found.get(str(status), 0) for status in DeliveryStatus}

    async def failed(self, limit: int = 200) -> list[WebhookDelivery]:
        """Deliveries that failed for good, newest first."""
        async with self.sessions() as session:
            query = (
                select(WebhookDelivery)
                .where(col(WebhookDelivery.status) == DeliveryStatus.FAILED)
                .order_by(col(WebhookDelivery.id).desc())
                .limit(limit)
            )
            return list((await session.exec(query)).all())

    async def retry(self, delivery_id: int) -> None:
        """Send a failed delivery again, as soon as the sender next looks, with a fresh count of attempts."""
        async with self.sessions() as session:
            retried = await session.exec(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == DeliveryStatus.FAILED)
                .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=self.clock.now())
            )
            await session.commit()
        if retried.rowcount == 1:
            return
        async with self.sessions() as session:
            exists = await session.get(WebhookDelivery, delivery_id)
        if exists is None:
            raise NotFound(f"No webhook delivery {delivery_id}.")
        raise Conflict(f"Webhook delivery {delivery_id} is {exists.status}, not failed: there is nothing to retry.")
