"""Each API key's webhook endpoint: where its events go and the `whsec_` secret that signs them."""

from __future__ import annotations

import base64
import secrets

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import InvalidRequest, NotFound
from gateway.models import ApiKey

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _checked_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidRequest(f"{url!r} is not a URL.", param="url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(f"A webhook endpoint must be an http(s) URL with a host, not {url!r}.", param="url")
    if len(url) > 2000:
        raise InvalidRequest("A webhook URL may be at most 2000 characters.", param="url")
    return url


async def set_endpoint(session: AsyncSession, key_id: int, url: str | None) -> tuple[ApiKey, str | None]:
    """Point the key's webhooks at `url` with a new secret (returned, to be shown once), or stop them (None).
    Events already in the outbox keep the URL they were made for."""
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    secret = new_secret() if url is not None else None
    key.webhook_url = _checked_url(url) if url is not None else None
    key.webhook_secret = secret
    session.add(key)
    await session.commit()
    await session.refresh(key)
    return key, secret
