"""What time it is, as one object the runtime hands out, so tests can move time instead of sleeping.

Claims, their leases, console logins and the login throttle read the clock; asyncio's own timers (a held
request's wait) do not, since they run on the event loop's monotonic time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
