"""Gateway API keys. Only a SHA-256 of each key is stored: keys are long random strings, so a fast
hash is as safe as a slow one and keeps authentication off the request path's CPU budget.

Each process remembers a key it found for `HITL_KEY_CACHE_SECONDS` (5 s), so a busy client costs one lookup
per key every few seconds, not a database round trip per request. A key disabled anywhere is therefore refused
by every process within that time; 0 looks the key up on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.errors import STORAGE_ERRORS, AuthenticationFailed, Forbidden, NotFound
from gateway.models import ApiKey, KeyRole

KEY_PREFIX = "hitl-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create(session: AsyncSession, name: str, role: KeyRole = KeyRole.CLIENT) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext, which is never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, role=role, prefix=plaintext[: len(KEY_PREFIX) + 6], key_hash=hash_key(plaintext))
    session.add(key)
    await session.commit()
    await session.refresh(key)
    return key, plaintext


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as `Authorization: Bearer hitl-...`.", code="missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("The Authorization header must be `Bearer <gateway API key>`.")
    return token.strip()


def _allowed(key: ApiKey | None, token: str, role: KeyRole) -> ApiKey:
    if key is None or key.disabled:
        shown = token[:9] + "..." if len(token) > 9 else "..."
        raise AuthenticationFailed(f"Incorrect API key provided: {shown}. Create one with `hitl keys create`.")
    if key.role != role:
        raise Forbidden(
            f"This is an API key for {key.role}, not {role}: create one with `hitl keys create NAME --role {role}`."
        )
    return key


class KeyCache:
    """Keys this process found lately, by the hash of their plaintext, each until `seconds` after its lookup.

    Only keys that exist and are enabled are kept (a wrong token is looked up every time, and never fills the
    cache); what a request may do is still checked on every request, against the key as it was found. While the
    database is unavailable, a key found before keeps working past its time.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, seconds: float) -> None:
        self._sessions = sessions
        self._clock = clock
        self._ttl = timedelta(seconds=seconds)
        self._found: dict[str, tuple[ApiKey, datetime]] = {}

    async def authenticate(self, authorization: str | None, role: KeyRole = KeyRole.CLIENT) -> ApiKey:
        """The enabled key the header names, when it has the role the route needs (a client key calls the chat
        API, an export key reads exports; neither does the other's work)."""
        token = bearer_token(authorization)
        digest = hash_key(token)
        now = self._clock.now()
        cached = self._found.get(digest)
        if cached is not None and now < cached[1]:
            return _allowed(cached[0], token, role)
        try:
            async with self._sessions() as session:
                key = (await session.exec(select(ApiKey).where(ApiKey.key_hash == digest))).first()
        except STORAGE_ERRORS:
            if cached is None:
                raise
            # The database is down: the key as it was last found keeps working until it is back (a key disabled
            # meanwhile too), so clients whose answers need no write, and waiting ones, are still served.
            return _allowed(cached[0], token, role)
        if key is None or key.disabled or not self._ttl:
            self._found.pop(digest, None)
        else:
            self._found[digest] = (key, now + self._ttl)
        return _allowed(key, token, role)


async def disable(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    key.disabled = True
    session.add(key)
    await session.commit()
    return key


async def set_retention(session: AsyncSession, key_id: int, days: float | None) -> ApiKey:
    """Keep this key's conversations `days` days (None: the global retention period)."""
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    key.retention_days = days
    session.add(key)
    await session.commit()
    return key
