"""Where held requests wait for a decision.

A decision in this process wakes its waiters at once through an `asyncio.Event` and hands them the
decided exchange, so they answer without another query; a decision made by another process (another
replica, the CLI) is seen by polling the database every `poll_interval`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any


class HoldHub:
    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._outcomes: dict[str, Any] = {}

    def notify(self, review_id: str, outcome: Any = None) -> None:
        """Wake the review's waiters; `outcome` (the decided exchange) saves each of them a query."""
        if review_id in self._waiters and outcome is not None:
            self._outcomes[review_id] = outcome
        for event in self._waiters.get(review_id, ()):
            event.set()

    def waiting(self, review_id: str) -> int:
        return len(self._waiters.get(review_id, ()))

    async def wait(self, review_id: str, timeout: float, is_decided: Callable[[], Awaitable[bool]]) -> tuple[bool, Any]:
        """Wait up to `timeout` seconds: (decided, the outcome a decision in this process handed over)."""
        event = asyncio.Event()
        self._waiters[review_id].add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            # Checked after registering, so a decision between the two cannot be missed.
            if await is_decided():
                return True, None
            while (remaining := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, self.poll_interval))
                    return True, self._outcomes.get(review_id)
                except TimeoutError:
                    if await is_decided():
                        return True, None
            return False, None
        finally:
            waiters = self._waiters[review_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[review_id]
                self._outcomes.pop(review_id, None)
