"""The long-lived parts of a running gateway, made in the app's lifespan and handed out by `deps.py`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.holds import HoldHub
from gateway.policy import Policy
from gateway.prompts import Prompts
from gateway.scoring.scorer import Scorer
from gateway.settings import Settings
from gateway.upstream import Upstreams


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    upstreams: Upstreams
    policy: Policy
    holds: HoldHub
    prompts: Prompts
    scorer: Scorer
