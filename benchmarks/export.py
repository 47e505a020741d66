"""Dataset export at scale, from PostgreSQL: `hitl export` over 10,000 and then 100,000 decided exchanges, each
run in its own process; its wall time, rows per second and peak memory (the process's max RSS). The export
streams (a server-side cursor, constant state per prompt), so the peak must not grow with the rows: target,
the 100,000-row run's peak within 1.25x the 10,000-row run's.

The decisions are written straight into the database: a third each approved, edited and overridden, one
prompt in ten asked twice (deduplication has work to do), each held answer stored as the gateway stores it
(`--tokens` tokens with their top-5 logprobs; 20 by default, so 100,000 of them fit on a CI disk).

    .venv/bin/python benchmarks/export.py [--format dpo] [--json benchmarks/results/export.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy
from fake_upstream import completion_body
from harness import HITL, ROOT, finish, fresh_postgres

from gateway import db

SIZES = (10_000, 100_000)
GROWTH_LIMIT = 1.25

SEED = """
WITH numbered AS (
    SELECT n, (n % 3) AS kind, 'chatcmpl-' || lpad(n::text, 32, '0') AS exchange_id,
           'rev-' || lpad(n::text, 32, '0') AS review_id,
           now() - make_interval(secs => CAST(:total AS integer) - n) AS at
    FROM generate_series(CAST(:start AS integer), CAST(:total AS integer)) AS n
), exchanges_in AS (
    INSERT INTO exchanges (id, request_id, api_key_id, model, upstream_model, stream, request, response,
        candidate_text, signals, confidence, policy_version, route, tier, reason, status, calibrator, upstream_ms,
        request_hash, created_at, decided_at)
    SELECT exchange_id, 'req-' || n, 1, 'bench-model', 'bench-model', false,
        json_build_object('model', 'bench-model', 'messages', json_build_array(
            json_build_object('role', 'system', 'content', 'You answer for the support desk.'),
            json_build_object('role', 'user', 'content',
                'Where is order ' || (n % (CAST(:total AS integer) * 9 / 10)) || '?'))),
        CAST(:response AS json), 'the candidate', CAST(:signals AS json), 0.5 + (n % 40) / 100.0, 'default-1',
        'hold', 'agent', 'band', CASE kind WHEN 0 THEN 'approved' WHEN 1 THEN 'edited' ELSE 'overridden' END,
        'default', 100, '', at, at
    FROM numbered
), reviews_in AS (
    INSERT INTO reviews (id, exchange_id, api_key_id, tier, kind, status, created_at, deadline_at, decided_at)
    SELECT review_id, exchange_id, 1, 'agent', 'hold', 'decided', at, at, at FROM numbered
)
INSERT INTO decisions (id, review_id, agent_id, action, text, comment, tags, from_tier, prompt_key, created_at)
SELECT n, review_id, 1, CASE kind WHEN 0 THEN 'approve' WHEN 1 THEN 'edit' ELSE 'override' END,
    CASE kind WHEN 0 THEN NULL ELSE 'The corrected answer for order ' || n || '.' END, '',
    CAST(CASE kind WHEN 2 THEN '["policy"]' ELSE '[]' END AS json), 'agent',
    'p1-' || md5((n % (CAST(:total AS integer) * 9 / 10))::text), at
FROM numbered
"""

PAIRS = """
INSERT INTO preference_pairs (exchange_id, decision_id, prompt, chosen, rejected, chosen_message, rejected_message,
    action, created_at)
SELECT e.id, d.id, e.request -> 'messages', d.text, e.candidate_text,
    json_build_object('role', 'assistant', 'content', d.text),
    json_build_object('role', 'assistant', 'content', e.response -> 'choices' -> 0 -> 'message' ->> 'content'),
    d.action, d.created_at
FROM decisions d JOIN reviews r ON r.id = d.review_id JOIN exchanges e ON e.id = r.exchange_id
WHERE d.id BETWEEN :start AND :total AND d.action IN ('edit', 'override')
"""


def seed(url: str, start: int, total: int, tokens: int) -> None:
    response = json.dumps(completion_body(tokens=tokens, sure=False))
    signals = json.dumps({"formula": "logprob-v1", "choices": [{"index": 0, "tokens": tokens, "confidence": 0.6}]})
    engine = sqlalchemy.create_engine(db.sync_url(url))
    with engine.begin() as connection:
        values = {"start": start, "total": total, "response": response, "signals": signals}
        connection.execute(sqlalchemy.text(SEED), values)
        connection.execute(sqlalchemy.text(PAIRS), {"start": start, "total": total})
        connection.execute(sqlalchemy.text("ANALYZE"))
    engine.dispose()


def exported(url: str, fmt: str, out: Path) -> dict[str, Any]:
    """Run `hitl export` in its own process; its wall time, peak RSS and what it wrote."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HITL_")}, "HITL_DATABASE_URL": url}
    started = time.perf_counter()
    process = subprocess.Popen(
        [HITL, "export", "--format", fmt, "--output", str(out)], env=env, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else ""
    if status != 0:
        raise RuntimeError(f"hitl export failed: {stderr[-2000:]}")
    manifest = json.loads(out.with_name(out.name.removesuffix(".jsonl") + ".manifest.json").read_text())
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "records_read": manifest["records_read"],
        "rows": sum(manifest["counts"].values()),
        "dropped": manifest["dropped"],
        "bytes": sum(found["bytes"] for found in manifest["files"]),
        "records_per_s": manifest["records_read"] / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--format", default="dpo")
    parser.add_argument("--tokens", type=int, default=20, help="tokens (with top-5 logprobs) per stored answer")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "export.json")
    parser.add_argument("--no-check", action="store_true", help="report only; never exit 1 for a missed target")
    args = parser.parse_args()

    url = fresh_postgres(args.database_url, "hitl_export")
    workdir = ROOT / "artifacts" / "bench-export"
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"format": args.format, "tokens": args.tokens, "runs": {}}
    done = 0
    for size in SIZES:
        print(f"seeding {size:,} decisions ...", flush=True)
        seed(url, done + 1, size, args.tokens)
        done = size
        print(f"exporting {size:,} ...", flush=True)
        results["runs"][str(size)] = exported(url, args.format, workdir / f"{args.format}-{size}.jsonl")

    small, large = (results["runs"][str(size)] for size in SIZES)
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    results["peak_rss_growth"] = growth
    print()
    for size in SIZES:
        run = results["runs"][str(size)]
        print(
            f"{size:>7,} decisions: {run['seconds']:.1f} s ({run['records_per_s']:,.0f} records/s),"
            f" peak RSS {run['peak_rss_mb']:.0f} MB, {run['rows']:,} rows ({run['bytes'] / 1e6:.1f} MB),"
            f" dropped {run['dropped']}"
        )
    print(f"peak memory at 100,000 is {growth:.2f}x that at 10,000 (target <= {GROWTH_LIMIT}x)")
    missed = [f"peak memory grew {growth:.2f}x from 10,000 to 100,000 rows"] if growth > GROWTH_LIMIT else []
    return finish(results, args.json, missed, args.no_check)


if __name__ == "__main__":
    sys.exit(main())
