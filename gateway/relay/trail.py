"""What each waiting client was finally given, written to its review's audit trail off the request path, many
at once: the deliveries that come together (a thousand deadlines at the same second) are one transaction, not
one each, so they do not queue behind one another for the database (on SQLite, one writer at a time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.models import DeadlineOutcome, EventKind, ReviewEvent, utcnow
from gateway.relay import exchanges

log = logging.getLogger(__name__)
GATHER_SECONDS = 0.0  # a batch is what queued while the last one was written (group commit): no added delay


@dataclass
class Deliveries:
    sessions: exchanges.Sessions
    later: Callable[[Coroutine[Any, Any, None]], None]  # runs work off the request path, awaited at shutdown
    _queued: list[ReviewEvent] = field(default_factory=list)
    _flushing: bool = False

    def record(self, review_id: str, status: str, outcome: DeadlineOutcome | None) -> None:
        """The audit trail's last word on a held review: what the waiting client was finally given."""
        detail: dict[str, Any] = {"status": status}
        if outcome is not None:
            detail["outcome"] = str(outcome)  # the wait ran out: placeholder, refusal, error or release
        self._queued.append(ReviewEvent(review_id=review_id, kind=EventKind.DELIVERED, detail=detail, at=utcnow()))
        if not self._flushing:
            self._flushing = True
            self.later(self._flush())

    async def _flush(self) -> None:
        try:
            while self._queued:
                await asyncio.sleep(GATHER_SECONDS)
                batch, self._queued = self._queued, []
                async with self.sessions() as session:
                    session.add_all(batch)
                    await session.commit()
        finally:
            self._flushing = False
