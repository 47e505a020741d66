"""Gateway API keys. Only a SHA-256 of each key is stored: keys are long random strings, so a fast
hash is as safe as a slow one and keeps authentication off the request path's CPU budget."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import AuthenticationFailed, Forbidden, NotFound
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


async def authenticate(session: AsyncSession, authorization: str | None, role: KeyRole = KeyRole.CLIENT) -> ApiKey:
    """The enabled key the header names, when it has the role the route needs (a client key calls the chat
    API, an export key reads exports; neither does the other's work)."""
    token = bearer_token(authorization)
    key = (await session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))).first()
    if key is None or key.disabled:
        shown = token[:9] + "..." if len(token) > 9 else "..."
        raise AuthenticationFailed(f"Incorrect API key provided: {shown}. Create one with `hitl keys create`.")
    if key.role != role:
        raise Forbidden(
            f"This is an API key for {key.role}, not {role}: create one with `hitl keys create NAME --role {role}`."
        )
    return key


async def disable(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    key.disabled = True
    session.add(key)
    await session.commit()
    return key
