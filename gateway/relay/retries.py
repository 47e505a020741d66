"""Retries are idempotent: a request that repeats one the gateway already took joins it.

Two signs mark a repeat: an `Idempotency-Key` header (any client may send one), or the OpenAI SDK's own
retry marker, `x-stainless-retry-count` of 1 or more with the same body (the SDK sends no idempotency key,
but it retries a dropped connection, a timeout or a 5xx: after a gateway restart every waiting client comes
back). A repeat from the same API key within the window joins the exchange it repeats: it waits on the same
review and gets its outcome, with no second upstream call and no second review.

A repeat can arrive while the first request is still being answered (the upstream is still generating, so
nothing is stored yet). In this process it then waits for the first one's exchange (`InFlight`); across
replicas, the exchange it repeats must be stored first.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.datastructures import Headers

from gateway.errors import InvalidRequest
from gateway.models import Exchange, ExchangeStatus

IDEMPOTENCY_KEY = "idempotency-key"
SDK_RETRY_COUNT = "x-stainless-retry-count"
REPLAYED = "idempotent-replayed"  # on a response that answers a repeat from the exchange it joined
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces: what a header carries unmangled


class Sign(StrEnum):
    """Why a request was taken as a repeat (the audit trail says which)."""

    IDEMPOTENCY_KEY = "idempotency-key"
    SDK_RETRY = "sdk-retry"


@dataclass(frozen=True)
class Identity:
    """What makes two requests the same one: the API key, and the client's key or the body."""

    api_key_id: int
    key: str | None
    fingerprint: str
    sdk_retry: bool

    @property
    def sign(self) -> Sign | None:
        if self.key is not None:
            return Sign.IDEMPOTENCY_KEY
        return Sign.SDK_RETRY if self.sdk_retry else None

    @property
    def slots(self) -> list[tuple[int, str]]:
        """Where the request stands while in flight: its body, and its key if it has one."""
        found = [(self.api_key_id, "body:" + self.fingerprint)]
        if self.key is not None:
            found.append((self.api_key_id, "key:" + self.key))
        return found

    @property
    def wanted(self) -> tuple[int, str]:
        """The slot a repeat looks for: the key when there is one, else the body."""
        return self.slots[-1]


def fingerprint(raw: dict[str, Any]) -> str:
    """SHA-256 of the body in a canonical form (keys sorted), so the same request hashes the same whatever
    order a client writes its keys in."""
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _retry_count(headers: Headers) -> int:
    try:
        return int(headers.get(SDK_RETRY_COUNT, "0"))
    except ValueError:
        return 0


def identify(headers: Headers, api_key_id: int, raw: dict[str, Any]) -> Identity:
    key = headers.get(IDEMPOTENCY_KEY)
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 printable ASCII characters without spaces.",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return Identity(api_key_id, key, fingerprint(raw), sdk_retry=_retry_count(headers) >= 1)


async def stored(session: AsyncSession, identity: Identity, since: datetime) -> Exchange | None:
    """The newest exchange since `since` that this request repeats. The same Idempotency-Key on another body
    is the client's mistake, and is refused rather than answered with someone else's answer."""
    query = select(Exchange).where(
        col(Exchange.api_key_id) == identity.api_key_id,
        col(Exchange.created_at) >= since,
        col(Exchange.status) != ExchangeStatus.FAILED,  # a failed call is asked again, not replayed
    )
    if identity.key is not None:
        query = query.where(col(Exchange.idempotency_key) == identity.key)
    else:
        query = query.where(col(Exchange.request_hash) == identity.fingerprint)
    found = (await session.exec(query.order_by(col(Exchange.created_at).desc()).limit(1))).first()
    return same_body(identity, found) if found is not None else None


def same_body(identity: Identity, exchange: Exchange) -> Exchange:
    """The exchange a keyed request repeats, once it is sure to be the same request."""
    if exchange.request_hash != identity.fingerprint:
        raise InvalidRequest(
            "This Idempotency-Key was used for a request with another body; use a new key for a new request.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return exchange


class InFlight:
    """The requests of this process between their arrival and their stored exchange, by identity slot, so a
    repeat that arrives meanwhile can wait for the exchange instead of asking the upstream again."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str], asyncio.Future[str]] = {}

    async def joined(self, identity: Identity) -> str | None:
        """The exchange id the request in flight under the same identity stored, once it has; None when
        there is none, or it failed before storing anything."""
        future = self._slots.get(identity.wanted)
        if future is None:
            return None
        try:
            return await asyncio.shield(future)
        except LookupError:
            return None

    @asynccontextmanager
    async def taking(self, identity: Identity) -> AsyncIterator[asyncio.Future[str]]:
        """Stand in the request's slots while it is answered; the caller sets the future's result to the
        stored exchange's id. A request that fails before that frees its slots for the repeat."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        mine = [slot for slot in identity.slots if slot not in self._slots]
        for slot in mine:
            self._slots[slot] = future
        try:
            yield future
        finally:
            if not future.done():
                future.set_exception(LookupError("nothing stored"))
                future.exception()  # retrieved: nobody may be waiting on it
            for slot in mine:
                self._slots.pop(slot, None)
