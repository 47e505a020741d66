"""Dataset exports from the agents' decisions.

`dpo`: TRL's conversational preference format, one JSON object per line:
`{"prompt": [messages...], "chosen": [{"role": "assistant", ...}], "rejected": [{"role": "assistant", ...}]}`,
which `datasets.load_dataset("json", data_files=...)` loads straight into `trl.DPOTrainer`. An answer that
calls tools is an assistant message with structured `tool_calls`, never the calls as a JSON string.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import IO, Any, Literal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import PreferencePair

Format = Literal["dpo"]


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if value is not None}


def dpo_row(pair: PreferencePair) -> dict[str, Any]:
    return {
        "prompt": [_message(message) for message in pair.prompt],
        "chosen": [_message(pair.chosen_message)],
        "rejected": [_message(pair.rejected_message)],
    }


async def pairs(session: AsyncSession, batch: int = 500) -> AsyncIterator[PreferencePair]:
    """Every preference pair, oldest first, read in batches so an export never holds them all."""
    last = 0
    while True:
        found = (
            await session.exec(
                select(PreferencePair)
                .where(col(PreferencePair.id) > last)
                .order_by(col(PreferencePair.id))
                .limit(batch)
            )
        ).all()
        if not found:
            return
        for pair in found:
            yield pair
        last = found[-1].id or last


async def write(session: AsyncSession, out: IO[str], fmt: Format = "dpo") -> int:
    written = 0
    async for pair in pairs(session):
        out.write(json.dumps(dpo_row(pair), ensure_ascii=False) + "\n")
        written += 1
    return written
