"""The sandbox: where the review desk runs work whose cost the client's request decides (checking an agent's
edit against the request's JSON Schema, diffing two long texts), in a worker process with a time limit.

A client's schema is hostile input. A `pattern` such as `^(\\w+\\s?)*$` makes Python's regex engine backtrack
for as long as the text is long, and it holds the GIL all the while: run in the server's process it would stop
every client of that process. In the sandbox it stops one worker process, which is killed (and replaced) when
it runs past the limit, while the event loop goes on serving. The worker is started on first use, by `spawn`
(never forked from a process that runs threads and an event loop), and stopped with the app.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from pebble import ProcessPool

T = TypeVar("T")


class TooSlow(InvalidRequest):
    """The sandboxed work ran past its time limit and was stopped; nothing it would have decided was done."""


class Sandbox:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds  # longest run of one piece of work, not counting the worker's start
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def _started(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                from pebble import ProcessPool  # on the first check, not when the app starts

                self._pool = ProcessPool(max_workers=1, context=multiprocessing.get_context("spawn"))
            return self._pool

    async def run(self, function: Callable[..., T], *args: Any, what: str) -> T:
        """`function(*args)` in the worker process (both must pickle); `TooSlow`, naming `what`, when it runs
        past the limit."""
        future = self._started().schedule(function, args=args, timeout=self.seconds)
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
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]  # pebble's pool methods are not annotated
            pool.join(timeout=5)
