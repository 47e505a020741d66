"""Deadlines that pass together, answered together: every waiting client whose wait runs out within the same
few milliseconds has its outcome recorded in one transaction (`exchanges.run_out_many`), not one each, so a
thousand deadlines at the same second are answered within it rather than one write after another (on SQLite,
one writer at a time, that took 15 s). A `release` outcome, which turns its review into an audit, is recorded
on its own as before."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.errors import NotFound
from gateway.models import DeadlineOutcome, Exchange, utcnow
from gateway.relay import exchanges

GATHER_SECONDS = 0.0  # a batch is what queued while the last one was written (group commit): no added delay
MOST = 250  # exchanges per transaction


@dataclass
class Deadlines:
    sessions: exchanges.Sessions
    _queued: list[tuple[str, str, DeadlineOutcome, asyncio.Future[Exchange]]] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None

    async def run_out(self, exchange_id: str, review_id: str, outcome: DeadlineOutcome) -> Exchange:
        """Record that the wait ran out with `outcome`; the exchange as it now stands (a decision that landed
        meanwhile wins)."""
        if outcome == DeadlineOutcome.RELEASE:
            exchange = await exchanges.load(self.sessions, exchange_id)
            return await exchanges.run_out(self.sessions, exchange, review_id, outcome)
        future: asyncio.Future[Exchange] = asyncio.get_running_loop().create_future()
        self._queued.append((exchange_id, review_id, outcome, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await asyncio.shield(future)  # a client that hangs up leaves its outcome to be recorded

    async def _flush(self) -> None:
        while self._queued:
            await asyncio.sleep(GATHER_SECONDS)
            batch, self._queued = self._queued[:MOST], self._queued[MOST:]
            try:
                found = await exchanges.run_out_many(self.sessions, [item[:3] for item in batch], utcnow())
            except Exception as exc:  # each waiter gets the error it would have had alone
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for exchange_id, _, _, future in batch:
                if future.done():
                    continue
                if exchange_id in found:
                    future.set_result(found[exchange_id])
                else:  # erased while its client waited
                    future.set_exception(NotFound(f"No exchange {exchange_id!r}."))
