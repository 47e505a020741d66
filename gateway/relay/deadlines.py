"""Deadlines that pass together, answered together: every waiting client whose wait runs out within the same
few milliseconds has its outcome recorded in one transaction (`exchanges.run_out_many`), not one each, so a
thousand deadlines at the same second are answered within it rather than one write after another (on SQLite,
one writer at a time, that took 15 s). A `release` outcome, which turns its review into an audit, is recorded
on its own as before."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.models import DeadlineOutcome, Exchange, ExchangeStatus, utcnow
from gateway.relay import exchanges

GATHER_SECONDS = 0.0  # a batch is what queued while the last one was written (group commit): no added delay
MOST = 1000  # exchanges per transaction


@dataclass
class Deadlines:
    sessions: exchanges.Sessions
    _queued: list[tuple[Exchange, str, DeadlineOutcome, asyncio.Future[Exchange]]] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None
    _settling: set[asyncio.Task[None]] = field(default_factory=set)

    async def run_out(self, held: Exchange, review_id: str, outcome: DeadlineOutcome) -> Exchange:
        """Record that the wait for `held` (as it was stored) ran out with `outcome`; the exchange as it now
        stands (a decision that landed meanwhile wins)."""
        if outcome == DeadlineOutcome.RELEASE:
            exchange = await exchanges.load(self.sessions, held.id)
            return await exchanges.run_out(self.sessions, exchange, review_id, outcome)
        future: asyncio.Future[Exchange] = asyncio.get_running_loop().create_future()
        self._queued.append((held, review_id, outcome, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await asyncio.shield(future)  # a client that hangs up leaves its outcome to be recorded

    async def _flush(self) -> None:
        while self._queued:
            await asyncio.sleep(GATHER_SECONDS)
            batch, self._queued = self._queued[:MOST], self._queued[MOST:]
            try:
                items = [(held.id, review_id, outcome) for held, review_id, outcome, _ in batch]
                recorded = await exchanges.run_out_many(self.sessions, items, utcnow())
            except Exception as exc:  # each waiter gets the error it would have had alone
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for held, _, outcome, future in batch:
                if future.done():
                    continue
                if held.id in recorded:  # still held: as the waiter knows it, with its outcome
                    future.set_result(ran_out(held, outcome))
                else:  # decided meanwhile (or erased while its client waited): read as it now stands
                    task = asyncio.create_task(_settle(self.sessions, held.id, future))
                    self._settling.add(task)  # held on to until it is done
                    task.add_done_callback(self._settling.discard)


async def _settle(sessions: exchanges.Sessions, exchange_id: str, future: asyncio.Future[Exchange]) -> None:
    try:
        found = await exchanges.load(sessions, exchange_id)
    except Exception as exc:  # NotFound when erased, a storage error when the database went
        if not future.done():
            future.set_exception(exc)
        return
    if not future.done():
        future.set_result(found)


def ran_out(held: Exchange, outcome: DeadlineOutcome) -> Exchange:
    """The exchange as its deadline's outcome makes it, from the waiter's copy: still held, or released as it was
    for `release`."""
    status = ExchangeStatus.RELEASED_ON_DEADLINE if outcome == DeadlineOutcome.RELEASE else ExchangeStatus.HELD
    return held.model_copy(update={"status": status, "deadline_outcome": outcome})
