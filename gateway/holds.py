"""Where held requests wait for a decision.

A decision in this process wakes its waiters at once through an `asyncio.Event`; a decision made by
another process (another replica, the CLI) is seen by polling the database every `poll_interval`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable


class HoldHub:
    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, review_id: str) -> None:
        for event in self._waiters.get(review_id, ()):
            event.set()

    def waiting(self, review_id: str) -> int:
        return len(self._waiters.get(review_id, ()))

    async def wait(self, review_id: str, timeout: float, is_decided: Callable[[], Awaitable[bool]]) -> bool:
        """Wait up to `timeout` seconds; True once the review is decided."""
        event = asyncio.Event()
        self._waiters[review_id].add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            # Checked after registering, so a decision between the two cannot be missed.
            if await is_decided():
                return True
            while (remaining := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, self.poll_interval))
                    return True
                except TimeoutError:
                    if await is_decided():
                        return True
            return False
        finally:
            waiters = self._waiters[review_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[review_id]
