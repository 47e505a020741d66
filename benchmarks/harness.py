"""What the benchmarks share: processes started and stopped around a measurement, their CPU time and peak
memory from /proc, free loopback ports, percentiles, and a fresh PostgreSQL database for the gateway."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlmodel import Session

from gateway import db
from gateway.models import Agent, ApiKey, Role
from gateway.relay import apikeys
from gateway.review.agents import password_hasher

ROOT = Path(__file__).parents[1]
KEY = "hitl-bench-" + "k" * 24
ADMIN = ("bench-admin", "bench password 1")
MODEL = "bench-model"
HITL = str(Path(sys.executable).with_name("hitl"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and of its children that ended."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime


def peak_rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    """Resident memory now (peak_rss_mb is the highest so far)."""
    return _status_mb(pid, "VmRSS:")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "n": len(values),
    }


def fresh_postgres(url: str, name: str) -> str:
    """An empty database `name` on the server of `url`, migrated and seeded; its URL."""
    server = make_url(url)
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    return seeded(server.set(database=name).render_as_string(hide_password=False))


def seeded(url: str) -> str:
    """Migrate the database at `url` and give it the benchmark's API key and admin; its URL."""
    db.upgrade(url)
    engine = sqlalchemy.create_engine(db.sync_url(url))
    with Session(engine) as session:
        session.add(ApiKey(name="bench", prefix=KEY[:11], key_hash=apikeys.hash_key(KEY)))
        session.add(Agent(username=ADMIN[0], password_hash=password_hasher().hash(ADMIN[1]), role=Role.ADMIN))
        session.commit()
    engine.dispose()
    return url


def gateway_env(database_url: str, upstream: str, **extra: str) -> dict[str, str]:
    upstreams = [{"name": MODEL, "api_base": upstream, "model": MODEL}]
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("HITL_")},
        "HITL_DATABASE_URL": database_url,
        "HITL_UPSTREAMS": json.dumps(upstreams),
        "HITL_LOCAL_MODEL__ENABLED": "false",
        "HITL_SECRET_KEY": "bench-secret",
        **extra,
    }


@dataclass
class Processes:
    """Servers started for one benchmark run, each logging to its own file; all stopped on the way out."""

    log_dir: Path
    stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def start(self, name: str, command: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.stack.enter_context((self.log_dir / f"{name}.log").open("wb"))
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.stack.callback(lambda: (process.terminate(), process.wait(30)))
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"{name} exited; see {self.log_dir / name}.log"
            assert time.monotonic() < deadline, f"{name} did not start"
            try:
                httpx.get(ready, timeout=1)
                return process
            except httpx.TransportError:
                time.sleep(0.1)

    def fake_upstream(
        self, latency_ms: float = 0.0, name: str = "upstream", sent_log: Path | None = None, token_ms: float = 0.0
    ) -> str:
        """The fake upstream (`fake_upstream.py`) in its own process; its base URL, `/v1` included."""
        port = free_port()
        command = [sys.executable, str(ROOT / "benchmarks" / "fake_upstream.py"), "--port", str(port)]
        command += ["--latency-ms", str(latency_ms), "--token-ms", str(token_ms)]
        command += ["--sent-log", str(sent_log)] if sent_log else []
        self.start(name, command, dict(os.environ), f"http://127.0.0.1:{port}/")
        return f"http://127.0.0.1:{port}/v1"


def finish(results: dict[str, Any], path: Path, missed: list[str], report_only: bool) -> int:
    """Write the raw figures with the machine and the date, say which targets were missed; the exit status."""
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    results["date"] = datetime.now(UTC).date().isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nraw figures: {path}")
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if missed and not report_only else 0
