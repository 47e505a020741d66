"""`hitl eval`: how well the configured judge tells right answers from wrong ones, on labelled rows.

A row is a JSON object with `question`, `candidate` and `label` (1 = correct, 0 = not), one per line,
like the rated Natural Questions answers in `benchmarks/data/nq_rated.jsonl`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from tqdm import tqdm

from gateway.conversation import upstream
from gateway.prompt_templates import Prompts
from gateway.scoring.selfcheck import Judge, SelfCheck, SelfChecker
from gateway.settings import Settings


class EvalFileError(ValueError):
    """A rows file that cannot be read; the message names the line."""


class Row(BaseModel):
    """One labelled answer; other fields (such as `gold`) are ignored."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    question: str
    candidate: str
    label: int = Field(ge=0, le=1)  # 1 = correct; strict, so `true` is not a label


def _problem(error: ErrorDetails) -> str:
    """What is wrong with a row, in words that name the field."""
    field = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] in ("json_invalid", "model_type"):
        return "not a JSON object"
    if field == "label":
        return "`label` must be 0 or 1"
    return f"`{field}` must be a string"


def read_rows(path: Path, limit: int | None = None, seed: int = 0) -> list[Row]:
    """Every row of a JSONL file, or a random `limit` of them (the same ones for the same seed)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalFileError(f"{path}: cannot read: {exc.strerror}") from None
    rows: list[Row] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(Row.model_validate_json(line))
        except ValidationError as exc:
            raise EvalFileError(f"{path} line {number}: {_problem(exc.errors()[0])}") from None
    if not rows:
        raise EvalFileError(f"{path}: no rows")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


async def judge_rows(
    checker: SelfChecker,
    model: str,
    rows: Sequence[Row],
    concurrency: int = 4,
    progress: Callable[[], None] | None = None,
) -> list[SelfCheck]:
    """The judge's verdict on every row, in order; `progress` is called once per finished row."""
    limit = asyncio.Semaphore(concurrency)

    async def one(row: Row) -> SelfCheck:
        async with limit:
            found = await checker.run(model, row.question, row.candidate)
        if progress is not None:
            progress()
        return found

    return list(await asyncio.gather(*(one(row) for row in rows)))


async def judge_with(
    settings: Settings, model: str, rows: Sequence[Row], concurrency: int = 4, progress: TextIO | None = None
) -> list[SelfCheck]:
    """Every row through `model` as the self-check judge, with the upstreams `settings` declare and a
    progress bar (on `progress`, standard error by default)."""
    async with httpx.AsyncClient() as client:
        upstreams = upstream.build(settings, client)
        try:
            checker = SelfChecker(settings.selfcheck, Judge(Prompts(), upstreams))
            with tqdm(total=len(rows), desc="judging", unit="row", file=progress) as bar:

                def step() -> None:
                    bar.update()

                return await judge_rows(checker, model, rows, concurrency, step)
        finally:
            upstreams.close()
