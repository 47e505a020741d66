"""A PostgreSQL server really stopped under the gateway, then started again (a private server of the test's own, so
the shared one is never touched), and a SQLite disk that really fills up (a small tmpfs): a client waiting on a held
answer still gets its deadline's outcome, a key found before keeps working past its cache time, a new request gets
a 503 with Retry-After, and once the database is back the gateway serves again without a restart."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway import db
from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests import factories
from tests.factories import MODEL

UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)
BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class Server:
    """A PostgreSQL server in a folder of its own, started and stopped with `pg_ctl` (as `postgres` when run as
    root, which PostgreSQL refuses to be)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _pg_ctl(self, *args: str) -> None:
        command = [*self._as, f"{BINARIES[-1]}/pg_ctl", "-D", str(self.folder / "data"), "-w", "-t", "60", *args]
        subprocess.run(command, check=True, capture_output=True, timeout=90)

    def init(self) -> None:
        command = [f"{BINARIES[-1]}/initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres"]
        subprocess.run([*self._as, *command, "--no-sync"], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.folder / "server.log"), "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")


@pytest.fixture
def server() -> Iterator[Server]:
    if not BINARIES or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("no PostgreSQL server binaries here")
    folder = Path(tempfile.mkdtemp(prefix="hitl-outage-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    made = Server(folder, factories.free_port())
    made.init()
    made.start()
    try:
        yield made
    finally:
        subprocess.run([*made._as, f"{BINARIES[-1]}/pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_stopped_database_leaves_waiting_clients_their_outcome_and_others_a_503(
    server: Server,
    make_settings: Callable[..., Settings],
    upstream: factories.UpstreamMock,
    clock: factories.ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db.upgrade(server.url)
    key = factories.make_api_key(server.url)
    app = create_app(make_settings(database_url=server.url), clock=clock)
    headers = {"Authorization": f"Bearer {key}"}
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}
    upstream.answer(UNSURE)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            runtime: Runtime = app.state.runtime
            waiting = asyncio.ensure_future(
                client.post("/v1/chat/completions", json={**question, "hitl": {"wait": 3}}, headers=headers)
            )
            await factories.open_review(runtime, timeout=30)
            await asyncio.to_thread(server.stop)

            with caplog.at_level(logging.WARNING, logger="hitl.relay"):
                answered = await asyncio.wait_for(waiting, 60)
            assert any("deadline_unrecorded" in record.getMessage() for record in caplog.records)
            # Its deadline fell in the outage: the tier's placeholder, from memory, never an error.
            assert answered.status_code == 200, answered.text
            assert answered.json()["hitl"]["status"] == "pending" and "Lyon" not in answered.text

            clock.advance(3600)  # well past the key cache's time
            models = await client.get("/v1/models", headers=headers)
            assert models.status_code == 200, models.text  # the key as it was found keeps working
            upstream.answer(CONFIDENT)
            refused = await client.post("/v1/chat/completions", json=question, headers=headers)
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"

            await asyncio.to_thread(server.start)
            for _ in range(50):  # the pool's broken connections are found and replaced
                again = await client.post("/v1/chat/completions", json=question, headers=headers)
                if again.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert again.status_code == 200 and again.json()["hitl"]["status"] == "released", again.text


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MB file system of the test's own (tmpfs), for a disk that really fills up."""
    folder = Path(tempfile.mkdtemp(prefix="hitl-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode()[:200]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte; the file that fills it."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


async def test_a_full_disk_leaves_waiting_clients_their_outcome_and_others_a_503(
    small_disk: Path,
    make_settings: Callable[..., Settings],
    upstream: factories.UpstreamMock,
    clock: factories.ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{small_disk / 'hitl.db'}"
    db.upgrade(url)
    key = factories.make_api_key(url)
    app = create_app(make_settings(database_url=url), clock=clock)
    headers = {"Authorization": f"Bearer {key}"}
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}
    upstream.answer(UNSURE)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            runtime: Runtime = app.state.runtime
            waiting = asyncio.ensure_future(
                client.post("/v1/chat/completions", json={**question, "hitl": {"wait": 2}}, headers=headers)
            )
            await factories.open_review(runtime, timeout=30)
            filler = _fill(small_disk)

            with caplog.at_level(logging.WARNING, logger="hitl.relay"):
                answered = await asyncio.wait_for(waiting, 60)
            assert any("deadline_unrecorded" in record.getMessage() for record in caplog.records)
            assert answered.status_code == 200, answered.text
            assert answered.json()["hitl"]["status"] == "pending" and "Lyon" not in answered.text

            refused = await client.post("/v1/chat/completions", json=question, headers=headers)
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text

            filler.unlink()
            upstream.answer(CONFIDENT)
            again = await client.post("/v1/chat/completions", json=question, headers=headers)
            assert again.status_code == 200 and again.json()["hitl"]["status"] == "released", again.text
