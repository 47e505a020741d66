"""The sandbox: where the review desk runs work whose cost the client's request decides (checking an agent's
edit against the request's JSON Schema, diffing two long texts), in a worker process with a time limit.

A client's schema is hostile input. A `pattern` such as `^(\\w+\\s?)*$` makes Python's regex engine backtrack
for as long as the text is long, and it holds the GIL all the while: run in the server's process it would stop
every client of that process. In the sandbox it stops one worker process, which is killed (and replaced) when
it runs past the limit, while the event loop goes on serving (`gateway/workers.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from gateway.errors import InvalidRequest
from gateway.workers import WorkerProcess

T = TypeVar("T")


class TooSlow(InvalidRequest):
    """The sandboxed work ran past its time limit and was stopped; nothing it would have decided was done."""


class Sandbox:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds  # longest run of one piece of work, not counting the worker's start
        self._worker = WorkerProcess()

    async def run(self, function: Callable[..., T], *args: Any, what: str) -> T:
        """`function(*args)` in the worker process (both must pickle); `TooSlow`, naming `what`, when it runs
        past the limit."""
        future = self._worker.schedule(function, *args, timeout=self.seconds)
        try:
            result: T = await asyncio.wrap_future(future)
        except FutureTimeout:
            raise TooSlow(
                f"{what} took longer than {self.seconds:g} s and was stopped, so nothing was sent.",
            ) from None
        except asyncio.CancelledError:
            future.cancel()  # type: ignore[no-untyped-call]  # the client went away: the worker's task is stopped
            raise
        return result

    def close(self) -> None:
        self._worker.close()
