"""One worker process beside the web server: started by `spawn` on first use (never a fork of a process that
runs threads and an event loop), given work one piece at a time, stopped with its owner. The gateway runs there
what must neither hold the web server's GIL nor be able to stall it: the bundled model, the review desk's
sandbox."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pebble import ProcessFuture, ProcessPool


class WorkerProcess:
    def __init__(self, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> None:
        self._initializer = initializer  # run once in the worker, with `initargs`, before any work
        self._initargs = initargs
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def schedule(self, function: Callable[..., Any], *args: Any, timeout: float | None = None) -> ProcessFuture[Any]:
        """`function(*args)` in the worker (both must pickle); past `timeout` seconds of running, the worker is
        killed and replaced and the future raises `TimeoutError`."""
        with self._lock:
            if self._pool is None:
                from pebble import ProcessPool  # on the first piece of work, not when the app starts

                spawn = multiprocessing.get_context("spawn")
                self._pool = ProcessPool(
                    max_workers=1, context=spawn, initializer=self._initializer, initargs=self._initargs
                )
            pool = self._pool
        return pool.schedule(function, args=args, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]  # pebble's pool methods are not annotated
            pool.join(timeout=10)
