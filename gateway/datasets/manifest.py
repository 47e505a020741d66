"""An export written to files: one JSONL file per side of the split, and beside them a manifest that says
what is in them (counts per side, the format and its row schema, the filters and checks, what was dropped and
why, the versions seen, the cursor to continue from) and a SHA-256 of each file, so a training job can check
it trains on what was exported."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.datasets import records
from gateway.datasets.export import TEST, TRAIN, Exporter, Plan
from gateway.errors import InvalidRequest


def line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row) + b"\n"


@dataclass
class _Out:
    path: Path
    handle: IO[bytes]
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)


def paths(out: Path, split: bool) -> dict[str, Path]:
    """Where each side goes: `out` itself without a split; `<stem>.train.jsonl` and `<stem>.test.jsonl` with."""
    if not split:
        return {TRAIN: out}
    stem = out.name.removesuffix(".jsonl")
    return {side: out.with_name(f"{stem}.{side}.jsonl") for side in (TRAIN, TEST)}


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".manifest.json")


def document(plan: Plan, exporter: Exporter, files: list[dict[str, Any]]) -> dict[str, Any]:
    tally = exporter.tally
    return {
        "format": plan.format.name,
        "created_at": datetime.now(UTC).isoformat(),
        "hitl_gateway": version("hitl-gateway"),
        "counts": {side: tally.rows.get(side, 0) for side in ((TRAIN, TEST) if plan.split.test_size > 0 else (TRAIN,))},
        "records_read": tally.read,
        "dropped": dict(tally.dropped),
        "filters": plan.filters.described(),
        "quality": {"min_edit_ratio": plan.quality.min_edit_ratio, "dedupe": plan.dedupe},
        "split": {"test_size": plan.split.test_size, "seed": plan.split.seed, "by": "prompt key"},
        "with_metadata": plan.options.with_metadata,
        "chat_template": plan.options.template.name if plan.options.template else None,
        "cursor": {"after": plan.filters.after_cursor, "next": tally.cursor},
        "versions": {"policies": sorted(exporter.policies), "calibrators": sorted(exporter.calibrators)},
        "row_schema": plan.format.schema,
        "files": files,
    }


async def write_files(
    engine: AsyncEngine, plan: Plan, out: Path, on_read: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Export to `out` (or its train and test files), then write the manifest beside it; the manifest."""
    upto = await records.snapshot(engine)
    exporter = Exporter(plan, on_read)
    targets = paths(out, plan.split.test_size > 0)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            outs = {side: _Out(path, stack.enter_context(path.open("wb"))) for side, path in targets.items()}
            async for side, row in exporter.stream(engine, upto):
                outs[side].write(line(row))
    except OSError as exc:
        raise InvalidRequest(f"Cannot write the export to {out}: {exc.strerror}", param="out") from None
    files = [
        {
            "name": found.path.name,
            "split": side,
            "rows": exporter.tally.rows.get(side, 0),
            "bytes": found.size,
            "sha256": found.digest.hexdigest(),
        }
        for side, found in outs.items()
    ]
    written = document(plan, exporter, files)
    manifest_path(out).write_bytes(orjson.dumps(written, option=orjson.OPT_INDENT_2) + b"\n")
    return written


async def lines(engine: AsyncEngine, exporter: Exporter, upto: int, side: str | None) -> AsyncIterator[bytes]:
    """The export up to decision `upto` as JSONL lines, streamed: every row, or one side's (`train`, `test`)."""
    async for found, row in exporter.stream(engine, upto):
        if side is None or found == side:
            yield line(row)
