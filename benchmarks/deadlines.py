"""A deadline storm: W clients held with deadlines that end at the same second, on a real `hitl serve`.

Each client asks for a held answer with `hitl.wait` set so that its deadline falls at the same moment T (the
gateway's own `deadline_at`, read back from the database). Nobody decides; at T every client is owed its tier's
deadline outcome (the placeholder). Measured per client: how late its answer arrived after its deadline.
Target: every one within 1 s of its deadline at 1,000 waiters.

    .venv/bin/python benchmarks/deadlines.py [--waiters 1000] [--database-url postgresql://...] [--json FILE]

Without --database-url it runs on a SQLite file (one process, the embedded default). Exit status 1 when the
target is missed (`--no-check` only reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

import aiohttp
import harness
import sqlalchemy
from harness import HITL, KEY, MODEL, ROOT, Processes, finish, free_port, fresh_postgres, seeded, summary
from sqlmodel import Session, col, select

from gateway import db
from gateway.models import Review


async def storm(base: str, waiters: int, ramp: float) -> tuple[dict[str, float], float]:
    """Send every held request so that its deadline falls at one moment; when each answer arrived, by exchange.

    The client is aiohttp: httpx's connection pool walks every connection for each request that completes, so
    a thousand answers arriving at once took it seconds to read (the client's delay, not the gateway's)."""
    moment = time.time() + ramp
    arrived: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=waiters + 10)
    timeout = aiohttp.ClientTimeout(total=ramp + 120)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout, headers=headers) as client:

        async def one(number: int) -> None:
            await asyncio.sleep(ramp * 0.8 * number / waiters)  # spread the sending over most of the ramp
            wait = moment - time.time()
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"storm {number} [hold]"}],
                "hitl": {"wait": wait},
            }
            async with client.post("/v1/chat/completions", json=body) as response:
                text = await response.read()
            done = time.time()
            assert response.status == 200, text[:300]
            answer = json.loads(text)["hitl"]
            assert answer["status"] == "pending", answer  # the deadline's placeholder, never the candidate
            arrived[answer["exchange_id"]] = done

        await asyncio.gather(*(one(number) for number in range(waiters)))
    return arrived, moment


def lateness(url: str, arrived: dict[str, float]) -> list[float]:
    """Seconds between each review's deadline (as the gateway stored it) and its client's answer."""
    engine = sqlalchemy.create_engine(db.sync_url(url))
    with Session(engine) as session:
        rows = session.exec(select(Review.exchange_id, Review.deadline_at).where(col(Review.exchange_id).in_(arrived)))
        deadlines = {
            exchange_id: deadline.replace(tzinfo=deadline.tzinfo or UTC).timestamp() for exchange_id, deadline in rows
        }
    engine.dispose()
    return [arrived[exchange_id] - deadlines[exchange_id] for exchange_id in arrived]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds from the first request to the deadline")
    parser.add_argument("--database-url", help="PostgreSQL server to run on (default: a SQLite file)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "deadlines.json")
    parser.add_argument("--no-check", action="store_true", help="report only; never exit 1 for a missed target")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Processes(ROOT / "artifacts" / "bench-deadlines") as processes:
        if args.database_url:
            url = fresh_postgres(args.database_url, "hitl_bench_deadlines")
        else:
            url = seeded(f"sqlite:///{tmp}/deadlines.db")
        env = harness.gateway_env(
            url,
            processes.fake_upstream(),
            HITL_SELFCHECK__MODE="never",
            HITL_AUDIT__RATE="0",
            HITL_HOLD__MAX_WAIT="900",
        )
        port = free_port()
        processes.start("gateway", [HITL, "serve", "--port", str(port)], env, f"http://127.0.0.1:{port}/")
        arrived, _ = asyncio.run(storm(f"http://127.0.0.1:{port}", args.waiters, args.ramp))
        late = lateness(url, arrived)
    figures = {**summary([seconds * 1000 for seconds in late]), "max": max(late) * 1000}
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{args.waiters} deadlines at one moment on {database}: answered after their deadline, in ms:")
    print("  " + ", ".join(f"{name} {value:.0f}" for name, value in figures.items()))
    missed = (
        [f"a client was answered {max(late):.2f} s after its deadline (target: within 1 s)"] if max(late) > 1 else []
    )
    results = {"waiters": args.waiters, "database": database, "late_ms": figures}
    return finish(results, args.json, missed, args.no_check)


if __name__ == "__main__":
    sys.exit(main())
