"""A shutdown that keeps the gateway's promises.

On SIGTERM (or Ctrl+C) uvicorn stops accepting connections and waits for the open ones, so a held request
would keep its client waiting until its deadline. `on_exit_signal` runs a callback in the event loop the
moment the signal arrives (the app wakes every waiting client, so each gets its deadline outcome with its
review id at once), then hands the signal on to the server's own handler. The lifespan then flushes pending
audit-trail writes; uvicorn ends whatever is still open after `HITL_SHUTDOWN_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def on_exit_signal(
    callback: Callable[[], None], *, drain: float = 0.0, draining: Callable[[], None] | None = None
) -> Iterator[None]:
    """While inside, an exit signal first schedules `callback` on the running loop, then reaches the handler
    that was there before (uvicorn's). With `drain` seconds, the first signal only calls `draining` (the replica
    turns not-ready) and the rest follows `drain` seconds later, the process serving meanwhile; a second signal
    goes on at once. Signals belong to the main thread: elsewhere (a server run in a thread, as tests do) this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS}
    drained = drain <= 0

    def proceed(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous[signal.Signals(sig)]
        if callable(before):
            before(sig, frame)
        else:  # SIG_DFL or SIG_IGN: put it back and let the signal do what it did before
            signal.signal(sig, before)
            signal.raise_signal(sig)

    def handler(sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two steps of the loop: the callback runs as a step of its own.
        nonlocal drained
        if drained:
            proceed(sig, frame)
            return
        drained = True
        if draining is not None:
            loop.call_soon_threadsafe(draining)
        loop.call_soon_threadsafe(loop.call_later, drain, proceed, sig, None)

    for sig in EXIT_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
