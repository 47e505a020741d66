"""The console stays responsive while the bundled model generates.

A real `hitl serve` with the bundled SmolLM2 model (SQLite, one process). Ten agents, each with its own
console session, open queue, review and history pages with a short pause between pages, for `--seconds`:

1. idle: nothing else runs;
2. generating: a client keeps the model generating the whole time (one 128-token answer after another);

both with the default threads for the model (every core but one) and, in the same run, with the model on
every core (`HITL_LOCAL_MODEL__THREADS` = the core count). The model runs in a process of its own; when it ran
in a thread of the web server's process, pages took 13-20 s while it generated. Target: the console pages'
p95 while the model generates within 2x of idle, with the default threads.

    .venv/bin/python benchmarks/console_load.py [--seconds 20] [--agents 10] [--json artifacts/console_load.json]

Exit status 1 when the target is missed (`--no-check` only reports).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness
import httpx
import sqlalchemy
from harness import HITL, KEY, ROOT, Processes, finish, free_port, percentile, summary
from sqlmodel import Session

from gateway import db
from gateway.conversation.bundled import local_model_available
from gateway.models import Agent, Role
from gateway.review.agents import password_hasher

PAUSE = 0.5  # seconds an agent reads a page before the next


def with_agents(url: str, count: int) -> list[tuple[str, str]]:
    engine = sqlalchemy.create_engine(db.sync_url(url))
    hasher = password_hasher()
    found = [(f"agent{number}", f"agent password {number}") for number in range(count)]
    with Session(engine) as session:
        for name, password in found:
            session.add(Agent(username=name, password_hash=hasher.hash(password), role=Role.AGENT))
        session.commit()
    engine.dispose()
    return found


def logged_in(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=120)
    page = client.get("/console/login").text
    token = page.split('name="csrftoken" value="', 1)[1].split('"', 1)[0]
    login = {"username": username, "password": password, "csrftoken": token, "next": "/console/"}
    assert client.post("/console/login", data=login).status_code == 303
    return client


def held_review(base: str) -> str:
    """One review to open: a question the bundled model answers, held when it is unsure (as it mostly is)."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is the boiling point of water on Mars?"}],
        "max_tokens": 24,
        "hitl": {"wait": 0},
    }
    for _ in range(5):
        auth = {"Authorization": f"Bearer {KEY}"}
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=auth, timeout=300)
        review_id = (reply.json().get("hitl") or {}).get("review_id")
        if review_id:
            return str(review_id)
    return ""


def agents_work(clients: list[httpx.Client], review_id: str, seconds: float) -> list[float]:
    """Every agent opens pages in turn for `seconds`; each page's latency in ms."""
    pages = ["/console/?tier=agent", "/console/history"] + ([f"/console/reviews/{review_id}"] if review_id else [])
    timings: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work(client: httpx.Client, offset: int) -> None:
        number = offset
        while time.monotonic() < stop:
            started = time.perf_counter()
            response = client.get(pages[number % len(pages)])
            spent = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.status_code
            with lock:
                timings.append(spent)
            number += 1
            time.sleep(PAUSE)

    threads = [threading.Thread(target=work, args=(client, index)) for index, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


class Generating:
    """A client that keeps the bundled model busy: one answer after another until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers = 0
        self.running = True
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
            "max_tokens": 128,
            "hitl": {"wait": 0},
        }
        with httpx.Client(timeout=600) as client:
            while self.running:
                client.post(f"{self.base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
                self.answers += 1

    def __enter__(self) -> Generating:
        self.thread.start()
        time.sleep(2)  # the model is loaded and generating before the agents start
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def measure(threads: int | None, agents: int, seconds: float, log_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, Processes(log_dir) as processes:
        url = harness.seeded(f"sqlite:///{folder}/console.db")
        people = with_agents(url, agents)
        port = free_port()
        env = harness.gateway_env(url, "unused", HITL_LOCAL_MODEL__ENABLED="true", HITL_UPSTREAMS="[]")
        env.update(HITL_SELFCHECK__MODE="never", HITL_AUDIT__RATE="0", HITL_LOGIN_MAX_FAILURES="1000")
        if threads is not None:
            env["HITL_LOCAL_MODEL__THREADS"] = str(threads)
        base = f"http://127.0.0.1:{port}"
        processes.start("gateway", [HITL, "serve", "--port", str(port)], env, f"{base}/health/live")
        review_id = held_review(base)
        clients = [logged_in(base, name, password) for name, password in people]
        try:
            idle = agents_work(clients, review_id, seconds)
            with Generating(base) as model:
                busy = agents_work(clients, review_id, seconds)
            answers = model.answers
        finally:
            for client in clients:
                client.close()
    return {
        "threads": threads or "default (cores - 1)",
        "idle_ms": summary(idle) | {"p95": percentile(idle, 0.95)},
        "generating_ms": summary(busy) | {"p95": percentile(busy, 0.95)},
        "p95_ratio": percentile(busy, 0.95) / percentile(idle, 0.95),
        "answers_generated": answers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase: idle, then generating")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "console_load.json")
    parser.add_argument("--no-check", action="store_true", help="report only; never exit 1 for a missed target")
    args = parser.parse_args()
    if not local_model_available():
        print("the bundled model is not installed: pip install 'hitl-gateway[local]'", file=sys.stderr)
        return 1
    cores = len(os.sched_getaffinity(0))
    log_dir = ROOT / "artifacts" / "console_load"
    results: dict[str, Any] = {"agents": args.agents, "seconds": args.seconds, "pause_s": PAUSE}
    results["default"] = measure(None, args.agents, args.seconds, log_dir)
    results["every_core"] = measure(cores, args.agents, args.seconds, log_dir)
    print(f"{'model threads':<22}{'idle p95':>10}{'generating p95':>16}{'ratio':>8}{'answers':>9}")
    for name in ("default", "every_core"):
        found = results[name]
        label = f"{found['threads']}" if name == "default" else f"{cores} (every core)"
        print(
            f"{label:<22}{found['idle_ms']['p95']:>9.0f}ms{found['generating_ms']['p95']:>14.0f}ms"
            f"{found['p95_ratio']:>8.2f}{found['answers_generated']:>9}"
        )
    missed = []
    if results["default"]["p95_ratio"] > 2:
        missed.append(f"console p95 while generating is {results['default']['p95_ratio']:.2f}x idle (target 2x)")
    return finish(results, args.json, missed, args.no_check)


if __name__ == "__main__":
    sys.exit(main())
