"""An export: the records the filters take, through the quality checks and deduplication, as rows of one
format, each on its side of the train/test split, with a tally of what was written and what was dropped.

Deduplication keeps, for each prompt (see `prompt_keys`), the newest record that yields rows in the format;
the records of a prompt arrive together, newest first, so this needs no memory of earlier prompts. It works
within one export: an incremental export (`after_cursor`) does not look back at what earlier ones wrote.
The split puts a prompt on the test side when a hash of its key (salted with the seed) falls below
`test_size`, so the same or a near-duplicate prompt never lands on both sides.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.datasets import records
from gateway.datasets.filters import Filters
from gateway.datasets.formats import FORMATS, Format, Options
from gateway.datasets.quality import Quality
from gateway.datasets.records import Record

DUPLICATE = "duplicate_prompt"
NOT_A_PAIR = "not_a_pair"  # an approval, for a format that takes only edits and overrides
TRAIN, TEST = "train", "test"


@dataclass(frozen=True)
class Split:
    test_size: float = 0.0  # share of prompts on the test side, 0 for none
    seed: str = "hitl"

    def side(self, prompt_key: str) -> str:
        if self.test_size <= 0:
            return TRAIN
        digest = hashlib.sha256(f"{self.seed}:{prompt_key}".encode()).digest()
        return TEST if int.from_bytes(digest[:8]) / 2**64 < self.test_size else TRAIN


@dataclass(frozen=True)
class Plan:
    format: Format
    filters: Filters = Filters()
    quality: Quality = Quality()
    options: Options = Options()
    split: Split = Split()
    dedupe: bool = True


@dataclass
class Tally:
    """What an export read, wrote and dropped (by reason), and the cursor the next export continues from."""

    read: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    cursor: int = 0

    def summary(self) -> dict[str, Any]:
        return {"records_read": self.read, "rows": dict(self.rows), "dropped": dict(self.dropped)}


class Exporter:
    """One format's rows from a stream of records in prompt order; keeps only the current prompt in mind."""

    def __init__(self, plan: Plan, on_read: Callable[[], None] | None = None) -> None:
        self.plan = plan
        self.tally = Tally()
        self.on_read = on_read
        self.policies: set[str] = set()  # the versions behind the rows written, for the manifest
        self.calibrators: set[str] = set()
        self._prompt: str | None = None
        self._taken = False  # whether the current prompt already gave rows

    def take(self, record: Record) -> list[dict[str, Any]]:
        self.tally.read += 1
        if self.on_read is not None:
            self.on_read()
        if record.prompt_key != self._prompt:
            self._prompt, self._taken = record.prompt_key, False
        problem = self.plan.quality.problem(record)
        rows = self.plan.format.rows(record, problem is None, self.plan.options)
        if not rows:
            self.tally.dropped[problem or NOT_A_PAIR] += 1
            return []
        if self._taken and self.plan.dedupe:
            self.tally.dropped[DUPLICATE] += 1
            return []
        self._taken = True
        self.tally.rows[self.plan.split.side(record.prompt_key)] += len(rows)
        self.policies.add(record.policy_version)
        self.calibrators.add(record.calibrator)
        return rows

    async def stream(self, engine: AsyncEngine, upto: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(side, row) for every row of the export, streamed, up to decision `upto` (the snapshot)."""
        self.tally.cursor = upto
        async for record in records.stream(engine, self.plan.filters, upto):
            side = self.plan.split.side(record.prompt_key)
            for row in self.take(record):
                yield side, row


async def counts(engine: AsyncEngine, plan: Plan) -> dict[str, Tally]:
    """Every format's tally under one plan's filters and checks, in one pass over the records."""
    upto = await records.snapshot(engine)
    exporters = {name: Exporter(replace(plan, format=found)) for name, found in FORMATS.items()}
    async for record in records.stream(engine, plan.filters, upto):
        for exporter in exporters.values():
            exporter.take(record)
    for exporter in exporters.values():
        exporter.tally.cursor = upto
    return {name: exporter.tally for name, exporter in exporters.items()}
