"""Holds at scale, on PostgreSQL, with two real gateway processes (replicas A and B) and a fake upstream.

1. Idle cost of waiting clients: W clients wait on A for held answers; over a quiet window it measures A's CPU
   (share of one core) and the database's transactions per second. Targets: under 5% of a core, under 20/s.
2. Confident requests beside them: p50/p99 latency of released requests on A with no waiters, then with the W
   waiting, taking turns with B (same configuration, no waiters). Target: A's p99 beside the waiters within
   20% of the better of the two no-waiter figures (A before, B meanwhile).
3. Release latency over D decisions each: a client waits on A; an agent decides through A (in-process) or
   through B (cross-replica). Timed from the decision's commit (B's console answers after it) to the client
   having its answer, and from the agent's click. Targets (cross-replica, from the commit): median under
   50 ms, p90 under 250 ms; in-process median under 20 ms.

    .venv/bin/python benchmarks/holds.py [--waiters 1000] [--decisions 100] [--json benchmarks/results/holds.json]

It creates (and empties) the database `hitl_bench` on the server of --database-url. Exit status 1 when a
target is missed (`--no-check` only reports).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import harness
import httpx
import psycopg
import sqlalchemy
from harness import ADMIN, HITL, KEY, MODEL, ROOT, Processes, cpu_seconds, finish, free_port, fresh_postgres, summary
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from gateway import db
from gateway.models import Exchange, Review


def gateway_env(database_url: str, upstream: str) -> dict[str, str]:
    return harness.gateway_env(
        database_url,
        upstream,
        HITL_SELFCHECK__MODE="never",
        HITL_UNDO_SECONDS="0",  # release latency is timed from the decision, not from the end of its undo window
        HITL_AUDIT__RATE="0",
        HITL_HOLD__MAX_WAIT="900",
        HITL_LOGIN_MAX_FAILURES="1000",
    )


def ask(text: str, wait: float = 0) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "hitl": {"wait": wait}}


async def confident_latencies(client: httpx.AsyncClient, bases: list[str], count: int) -> list[list[float]]:
    """`count` released requests to each of `bases`, one at a time and taking turns, so that every base sees
    the same background noise; the latencies per base, in ms."""
    timings: list[list[float]] = [[] for _ in bases]
    for number in range(count):
        for index, base in enumerate(bases):
            started = time.perf_counter()
            response = await client.post(f"{base}/v1/chat/completions", json=ask(f"Sure question {number}?"))
            timings[index].append((time.perf_counter() - started) * 1000)
            assert response.json()["hitl"]["status"] == "released", response.text[:300]
    return timings


def count_reviews(url: str) -> int:
    engine = sqlalchemy.create_engine(db.sync_url(url))
    with Session(engine) as session:
        found = len(session.exec(select(Review.id)).all())
    engine.dispose()
    return found


def transactions(url: str) -> int:
    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def console_session(base: str) -> tuple[httpx.AsyncClient, str]:
    console = httpx.AsyncClient(base_url=base, timeout=30)
    page = (await console.get("/console/login")).text
    token = page.split('name="csrftoken" value="', 1)[1].split('"', 1)[0]
    login = {"username": ADMIN[0], "password": ADMIN[1], "csrftoken": token, "next": "/console/"}
    assert (await console.post("/console/login", data=login)).status_code == 303
    return console, token


async def release_latencies(
    client: httpx.AsyncClient, a: str, decider: str, url: str, count: int, label: str
) -> dict[str, list[float]]:
    """Hold one answer on A at a time and decide it through `decider`; time commit -> client and click -> client."""
    console, token = await console_session(decider)
    engine = sqlalchemy.create_engine(db.sync_url(url))
    from_commit, from_click = [], []
    try:
        for number in range(count):
            request_id = f"req-{label}-{number}"
            waiting = asyncio.create_task(
                client.post(
                    f"{a}/v1/chat/completions",
                    json=ask(f"{label} {number} [hold]", wait=60),
                    headers={"x-request-id": request_id},
                )
            )
            review_id = None
            while review_id is None:
                await asyncio.sleep(0.01)
                with Session(engine) as session:
                    review_id = session.exec(
                        select(Review.id)
                        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
                        .where(col(Exchange.request_id) == request_id)
                    ).first()
            await asyncio.sleep(0.05)  # the client is waiting on the review by now
            clicked = time.perf_counter()
            decided = await console.post(
                f"/console/reviews/{review_id}/decide", data={"action": "approve", "csrftoken": token}
            )
            committed = time.perf_counter()  # the console answers once the decision has committed
            response = await waiting
            received = time.perf_counter()
            assert decided.status_code == 303 and response.json()["hitl"]["status"] == "approved", response.text[:300]
            # The client may be answered before the console's reply reaches us: that counts as 0 from the commit.
            from_commit.append(max(0.0, received - committed) * 1000)
            from_click.append((received - clicked) * 1000)
    finally:
        engine.dispose()
        await console.aclose()
    return {"from_commit": from_commit, "from_click": from_click}


async def measure(args: argparse.Namespace, url: str, a: str, b: str, pid_a: int, pid_b: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.waiters + 100, max_keepalive_connections=args.waiters + 100)
    headers = {"Authorization": f"Bearer {KEY}"}
    results: dict[str, Any] = {}
    # The measured requests go through their own client: in the waiters' pool, each of them would first look
    # through a thousand connections for an idle one, which made the requests to A and to B alike twice as slow.
    async with (
        httpx.AsyncClient(limits=limits, headers=headers, timeout=900) as client,
        httpx.AsyncClient(headers=headers, timeout=900) as probe,
    ):
        await confident_latencies(probe, [a, b], 50)  # warm up
        alone, _ = await confident_latencies(probe, [a, b], args.requests)
        results["confident_no_waiters_ms"] = summary(alone)

        waiters = [
            asyncio.create_task(client.post(f"{a}/v1/chat/completions", json=ask(f"Waiter {n} [hold]", wait=900)))
            for n in range(args.waiters)
        ]
        started = time.monotonic()
        while count_reviews(url) < args.waiters:
            assert time.monotonic() - started < 300, "the waiters were not all held"
            await asyncio.sleep(0.5)
        # Every waiter is asleep by now; PostgreSQL's idle backends report their statistics up to 10 s late,
        # so the registrations' transactions must be counted before the window opens.
        await asyncio.sleep(args.settle)

        cpu_a, cpu_b, xacts, quiet_started = cpu_seconds(pid_a), cpu_seconds(pid_b), transactions(url), time.monotonic()
        await asyncio.sleep(args.quiet)
        quiet = time.monotonic() - quiet_started
        results["idle"] = {
            "waiters": args.waiters,
            "seconds": quiet,
            "cpu_share_a": (cpu_seconds(pid_a) - cpu_a) / quiet,
            "cpu_share_b": (cpu_seconds(pid_b) - cpu_b) / quiet,
            # The two reads of pg_stat_database are transactions too; they are not the gateway's.
            "db_transactions_per_s": (transactions(url) - xacts - 1) / quiet,
        }

        # A with its waiters, and B (the same configuration, no waiters) taking turns: the same noise for both.
        # Warmed up again first, as before the waiters: after the idle window both have let their kept-alive
        # connections go (the client's, the upstream's), and the first requests would open new ones.
        await confident_latencies(probe, [a, b], 50)
        beside, control = await confident_latencies(probe, [a, b], args.requests)
        results["confident_with_waiters_ms"] = summary(beside)
        results["confident_control_no_waiters_ms"] = summary(control)
        results["in_process_release_ms"] = {
            k: summary(v) for k, v in (await release_latencies(probe, a, a, url, args.decisions, "local")).items()
        }
        results["cross_replica_release_ms"] = {
            k: summary(v) for k, v in (await release_latencies(probe, a, b, url, args.decisions, "remote")).items()
        }
        assert not any(task.done() for task in waiters), "a waiter was answered early"
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return results


def report(results: dict[str, Any]) -> list[str]:
    idle = results["idle"]
    alone, beside = results["confident_no_waiters_ms"], results["confident_with_waiters_ms"]
    control = results["confident_control_no_waiters_ms"]
    local, remote = results["in_process_release_ms"], results["cross_replica_release_ms"]
    # Against the better of the two figures with no waiters (A before them, B meanwhile): one stray slow request
    # in either control must not flatter the ratio.
    baseline = min(alone["p99"], control["p99"])
    ratio = beside["p99"] / baseline
    print(f"\n{idle['waiters']} clients waiting on replica A, over {idle['seconds']:.1f} s:")
    print(f"  CPU of A             {idle['cpu_share_a'] * 100:6.2f}% of a core   (target < 5%)")
    print(f"  CPU of B (no waiters){idle['cpu_share_b'] * 100:6.2f}% of a core")
    print(f"  database transactions {idle['db_transactions_per_s']:6.2f} /s          (target < 20/s)")
    print("\nConfident (released) requests, one at a time, A and B taking turns:")
    print(f"  A before the waiters      p50 {alone['median']:7.1f} ms   p99 {alone['p99']:7.1f} ms")
    print(f"  A beside {idle['waiters']} waiting   p50 {beside['median']:7.1f} ms   p99 {beside['p99']:7.1f} ms")
    print(f"  B meanwhile (no waiters)  p50 {control['median']:7.1f} ms   p99 {control['p99']:7.1f} ms")
    print(f"  p99 ratio, A beside the waiters / the better control  {ratio:.2f}x   (target <= 1.20x)")
    print(f"\nRelease latency, {remote['from_commit']['n']} decisions each (median / p90 / p99, ms):")
    for name, figures in (("in-process (A decides)", local), ("cross-replica (B decides)", remote)):
        commit, click = figures["from_commit"], figures["from_click"]
        print(f"  {name:26} from commit {commit['median']:6.1f} / {commit['p90']:6.1f} / {commit['p99']:6.1f}")
        print(f"  {'':26} from click  {click['median']:6.1f} / {click['p90']:6.1f} / {click['p99']:6.1f}")
    missed = []
    if idle["cpu_share_a"] >= 0.05:
        missed.append("idle CPU >= 5% of a core")
    if idle["db_transactions_per_s"] >= 20:
        missed.append("database transactions >= 20/s")
    if ratio > 1.2:
        missed.append("confident p99 grew more than 20% beside the waiters")
    if remote["from_commit"]["median"] >= 50 or remote["from_commit"]["p90"] >= 250:
        missed.append("cross-replica release: median >= 50 ms or p90 >= 250 ms")
    if local["from_commit"]["median"] >= 20:
        missed.append("in-process release median >= 20 ms")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300, help="confident requests per latency sample")
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds of the idle window")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds between the last hold and the window")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "holds.json")
    parser.add_argument("--no-check", action="store_true", help="report only; never exit 1 for a missed target")
    args = parser.parse_args()

    url = fresh_postgres(args.database_url, "hitl_bench")
    hitl = HITL
    with Processes(ROOT / "artifacts" / "bench-holds") as processes:
        port_a, port_b = free_port(), free_port()
        env = gateway_env(url, processes.fake_upstream())
        gateway_a = processes.start("a", [hitl, "serve", "--port", str(port_a)], env, f"http://127.0.0.1:{port_a}/")
        gateway_b = processes.start("b", [hitl, "serve", "--port", str(port_b)], env, f"http://127.0.0.1:{port_b}/")
        results = asyncio.run(
            measure(args, url, f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}", gateway_a.pid, gateway_b.pid)
        )
    return finish(results, args.json, report(results), args.no_check)


if __name__ == "__main__":
    sys.exit(main())
