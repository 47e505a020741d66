"""`hitl serve` as operators run it: SIGTERM answers every waiting client with its deadline outcome and exits
in time; `--workers N` runs N processes whose holds, claims and decisions work across each other."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from gateway.models import EventKind, Review, ReviewEvent, Role
from tests import factories

pytestmark = pytest.mark.slow


def reviews(url: str) -> list[Review]:
    with factories.sync_session(url) as session:
        return list(session.exec(select(Review)).all())


def runs_on_uvloop_and_httptools(pid: int) -> bool:
    """Whether the process serves on uvloop's event loop and httptools' parser: their extension modules are
    mapped in it (with `loop="asyncio"` uvloop's is not)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "/uvloop/loop." in maps and "/httptools/parser/parser." in maps


def test_sigterm_answers_every_waiting_client_and_exits_in_time(
    database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    key = factories.make_api_key(database_url)
    env = factories.gateway_env(database_url, unsure_upstream, HITL_SHUTDOWN_TIMEOUT="5")
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log")
    answers: dict[int, Any] = {}
    try:
        threads = factories.sdk_clients(gateway.base, key, 4, answers)
        factories.until(lambda: len(reviews(database_url)) == 4, 30, "four held reviews")
        time.sleep(0.3)  # they are waiting now
        assert runs_on_uvloop_and_httptools(gateway.process.pid)
        signalled = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(10)
        answered = time.monotonic() - signalled
        code = gateway.process.wait(10)
        exited = time.monotonic() - signalled
    finally:
        gateway.stop()
    assert answered < 5 and exited < 5 + 3, (answered, exited)  # not the 60 s the clients asked to wait
    # uvicorn re-raises the signal once it has shut down cleanly, so the process ends "killed by SIGTERM".
    log = (tmp_path / "gateway.log").read_text()
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log[-3000:]
    held = {review.id for review in reviews(database_url)}
    assert {answer.model_extra["hitl"]["review_id"] for answer in answers.values()} == held
    assert {answer.model_extra["hitl"]["status"] for answer in answers.values()} == {"pending"}
    # The audit trail's last word was flushed before the process went: what each client got.
    with factories.sync_session(database_url) as session:
        delivered = session.exec(select(ReviewEvent).where(col(ReviewEvent.kind) == EventKind.DELIVERED)).all()
    assert {event.review_id for event in delivered} == held


def test_workers_share_holds_claims_and_decisions(database_url: str, unsure_upstream: str, tmp_path: Path) -> None:
    key = factories.make_api_key(database_url)
    factories.make_agent(database_url, "grace", "battery staple", Role.ADMIN)
    env = factories.gateway_env(database_url, unsure_upstream)
    del env["HITL_SECRET_KEY"]  # `hitl serve --workers` makes one secret for all its workers
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log", "--workers", "2")
    answers: dict[int, Any] = {}
    try:
        workers = subprocess.run(["pgrep", "-P", str(gateway.process.pid)], capture_output=True, text=True)
        assert len(workers.stdout.split()) >= 2, workers
        spawned = [pid for pid in workers.stdout.split() if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(spawned) == 2, spawned
        # The port answers as soon as one worker serves; the other may still be starting (importing its loop).
        both = "both workers serving on uvloop and httptools"
        factories.until(lambda: all(runs_on_uvloop_and_httptools(int(pid)) for pid in spawned), 30, both)
        threads = factories.sdk_clients(gateway.base, key, 6, answers)
        factories.until(lambda: len(reviews(database_url)) == 6, 30, "six held reviews")
        # Each console request may land on either worker: the login, the claim and the decision all hold.
        with httpx.Client(base_url=gateway.base, timeout=30) as console:
            token = factories.csrf_token(console.get("/console/login").text)
            login = {"username": "grace", "password": "battery staple", "csrftoken": token, "next": "/console/"}
            assert console.post("/console/login", data=login).status_code == 303
            for review in reviews(database_url):
                assert console.get(f"/console/reviews/{review.id}").status_code == 200
                decision = {"action": "edit", "text": f"Decided {review.id}.", "csrftoken": token}
                assert console.post(f"/console/reviews/{review.id}/decide", data=decision).status_code == 303
        for thread in threads:
            thread.join(30)
    finally:
        gateway.stop()
    failures = [answer for answer in answers.values() if isinstance(answer, Exception)]
    assert not failures and len(answers) == 6, failures
    for answer in answers.values():
        assert answer.choices[0].message.content == f"Decided {answer.model_extra['hitl']['review_id']}."


# Every worker uvicorn spawns runs this first (it starts as `python -c ... --multiprocessing-fork`): a worker that
# takes 8 s to start, as on a loaded 2-core machine, where uvicorn's own health check gave it 5 s.
SLOW_WORKER = """
import sys, time
if "--multiprocessing-fork" in sys.argv:
    time.sleep(8)
"""


def test_workers_that_start_slowly_are_given_the_time(database_url: str, unsure_upstream: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SLOW_WORKER)
    env = factories.gateway_env(database_url, unsure_upstream, PYTHONPATH=str(tmp_path))
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log", "--workers", "2")
    try:
        first = set(
            subprocess.run(["pgrep", "-P", str(gateway.process.pid)], capture_output=True, text=True).stdout.split()
        )
        spawned = [pid for pid in first if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(spawned) == 2, spawned
        factories.until(lambda: all(runs_on_uvloop_and_httptools(int(pid)) for pid in spawned), 60, "both workers")
        now = set(
            subprocess.run(["pgrep", "-P", str(gateway.process.pid)], capture_output=True, text=True).stdout.split()
        )
    finally:
        gateway.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert now == first and "died" not in log, log[-3000:]  # the same two workers: none killed and replaced


def processes_with(mark: str) -> list[int]:
    """The processes whose environment holds `mark` (a server and the workers it spawned inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended while we looked
    return found


def test_a_server_that_does_not_come_up_in_time_is_not_left_running(
    database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    mark = f"started-by={tmp_path}"
    # Its workers are still starting when it gives up; it has had time to start them, on a loaded machine too.
    (tmp_path / "sitecustomize.py").write_text(SLOW_WORKER.replace("time.sleep(8)", "time.sleep(30)"))
    env = factories.gateway_env(database_url, unsure_upstream, GATEWAY_TEST_MARK=mark, PYTHONPATH=str(tmp_path))
    log = tmp_path / "gateway.log"
    with pytest.raises(AssertionError, match="did not come up"):
        factories.GatewayProcess(env, factories.free_port(), log, "--workers", "2", startup=15)
    assert "Started parent process" in log.read_text()  # it had spawned its workers
    assert not factories.GatewayProcess.running
    assert processes_with(mark) == []  # neither the parent nor a worker it had spawned


DRAIN = 8  # seconds: room for a loaded machine to turn not-ready and answer a request inside the drain


def test_sigterm_with_a_drain_turns_not_ready_first_and_keeps_serving(
    database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    key = factories.make_api_key(database_url)
    env = factories.gateway_env(database_url, unsure_upstream, HITL_DRAIN_SECONDS=str(DRAIN))
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log")
    try:
        assert httpx.get(f"{gateway.base}/health/ready").status_code == 200
        signalled = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        factories.until(lambda: httpx.get(f"{gateway.base}/health/ready").status_code == 503, DRAIN, "not ready")
        models = httpx.get(f"{gateway.base}/v1/models", headers={"Authorization": f"Bearer {key}"})
        served_while_draining = time.monotonic() - signalled < DRAIN
        gateway.process.wait(20)
        exited = time.monotonic() - signalled
    finally:
        gateway.stop()
    assert models.status_code == 200 and served_while_draining  # a new request is still answered meanwhile
    assert exited >= DRAIN  # and the process went only after the drain


def test_logs_are_json_lines_naming_the_request_exchange_and_review(
    database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    key = factories.make_api_key(database_url)
    env = factories.gateway_env(database_url, unsure_upstream)
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log")
    try:
        question = {"model": factories.MODEL, "messages": [{"role": "user", "content": "Secret question 7?"}]}
        headers = {"Authorization": f"Bearer {key}", "x-request-id": "req-log-1", "x-hitl-wait": "0"}
        held = httpx.post(f"{gateway.base}/v1/chat/completions", json=question, headers=headers)
    finally:
        gateway.stop()
    text = (tmp_path / "gateway.log").read_text()
    banner = ("hitl-gateway on", "  ")  # what `hitl serve` prints for a person on its standard output
    lines = [json.loads(line) for line in text.splitlines() if line and not line.startswith(banner)]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    (access,) = [line for line in lines if line["logger"] == "uvicorn.access" and line["request_id"] == "req-log-1"]
    assert access["exchange_id"] == held.headers["x-hitl-exchange-id"]
    assert access["review_id"] == held.headers["x-hitl-review-id"]
    assert "Secret question" not in text and "Lyon" not in text  # never a prompt or an answer


def test_logs_as_text_lines(database_url: str, unsure_upstream: str, tmp_path: Path) -> None:
    env = factories.gateway_env(database_url, unsure_upstream)
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log", "--log-format", "text")
    try:
        httpx.get(f"{gateway.base}/health/live", headers={"x-request-id": "req-log-2"})
    finally:
        gateway.stop()
    (line,) = [line for line in (tmp_path / "gateway.log").read_text().splitlines() if "[req-log-2]" in line]
    assert " INFO uvicorn.access [req-log-2] " in line and not line.startswith("{")


def test_workers_metrics_are_summed_whichever_worker_is_scraped(
    database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    key = factories.make_api_key(database_url)
    env = factories.gateway_env(database_url, unsure_upstream)
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log", "--workers", "2")
    try:
        spawned = subprocess.run(["pgrep", "-P", str(gateway.process.pid)], capture_output=True, text=True).stdout
        workers = [pid for pid in spawned.split() if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        factories.until(lambda: all(runs_on_uvloop_and_httptools(int(pid)) for pid in workers), 60, "both workers")
        # Multiprocess mode: every worker writes its figures into the one folder `hitl serve` made for them.
        folders = {
            dict(
                item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item
            ).get(b"PROMETHEUS_MULTIPROC_DIR")
            for pid in workers
        }
        (folder,) = folders
        assert folder and Path(folder.decode()).is_dir()
        served = set()
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            with httpx.Client() as client:
                served.add(
                    client.get(f"{gateway.base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
                )
        counts = []
        for _ in range(4):
            with httpx.Client() as client:
                text = client.get(f"{gateway.base}/metrics").text
            line = [
                line
                for line in text.splitlines()
                if line.startswith("hitl_http_requests_total") and 'route="/v1/models",status="200"' in line
            ]
            counts.append(float(line[0].rsplit(" ", 1)[1]))
    finally:
        gateway.stop()
    assert served == {200} and counts == [20.0] * 4, text  # every scrape, from either worker, sees all 20
