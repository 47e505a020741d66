"""The deployable shape: `docker-compose.yml` (PostgreSQL, a migration job, two replicas, nginx) is valid and
configured only through documented settings, and the same topology without Docker (the migration job, two
`hitl serve` processes, nginx with the same config) keeps long waits and SSE open and releases across them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from sqlmodel import select

from gateway.models import Review
from gateway.settings import HoldSettings
from tests import factories
from tests.factories import MODEL

ROOT = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()
README = (ROOT / "README.md").read_text()
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def test_compose_has_the_production_shape() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "migrate", "gateway-a", "gateway-b", "lb"}
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"] and any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    migrate = services["migrate"]
    assert migrate["command"] == ["hitl", "migrate", "--bootstrap"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("gateway-a", "gateway-b"):
        replica = services[name]
        assert replica["command"] == ["hitl", "serve"] and replica["healthcheck"]["test"]
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["lb"]["volumes"]
    assert {services["lb"]["depends_on"][name]["condition"] for name in ("gateway-a", "gateway-b")} == {
        "service_healthy"
    }


def test_compose_is_configured_only_by_documented_settings() -> None:
    documented = set(re.findall(r"^\| `(HITL_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    used = {name for service in COMPOSE["services"].values() for name in (service.get("environment") or {})}
    hitl = {name for name in used if name.startswith("HITL_")}
    assert hitl and hitl <= documented, hitl - documented
    assert used - hitl <= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


def test_the_load_balancer_keeps_waits_and_streams_open() -> None:
    assert "proxy_buffering off;" in NGINX_CONF and "proxy_http_version 1.1;" in NGINX_CONF
    timeouts = [int(seconds) for seconds in re.findall(r"proxy_read_timeout (\d+)s;", NGINX_CONF)]
    assert timeouts and min(timeouts) > HoldSettings().max_wait  # longer than the longest hold
    assert set(re.findall(r"server (gateway-[ab]):8000", NGINX_CONF)) == {"gateway-a", "gateway-b"}


def _require(tool: str) -> None:
    """Skip without the tool, unless HITL_REQUIRE_DEPLOY_TOOLS=1 (set by .ci/run), where it is a failure."""
    if os.environ.get("HITL_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(f"HITL_REQUIRE_DEPLOY_TOOLS=1 but {tool} is missing: apt-get install {tool}")
    pytest.skip(f"{tool} is not installed")


def test_docker_compose_config_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        _require("docker-compose")
    env = {**os.environ, "HITL_SECRET_KEY": "s", "HITL_UPSTREAMS": "[]"}
    done = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


# --- the same topology, without Docker --------------------------------------------------------------------


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[Any]:
    """nginx with `deploy/nginx.conf`, its replicas and port rewritten to loopback: call with (port_a, port_b)."""
    if not Path(NGINX).exists():
        _require("nginx")
    started: list[subprocess.Popen[bytes]] = []

    def start(port_a: int, port_b: int) -> str:
        port = factories.free_port()
        conf = (
            NGINX_CONF.replace("gateway-a:8000", f"127.0.0.1:{port_a}")
            .replace("gateway-b:8000", f"127.0.0.1:{port_b}")
            .replace("listen 80;", f"listen 127.0.0.1:{port};")
        )
        # What Docker's nginx image sets up itself: a pid file, logs and a user that may write its temp files.
        head = f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log;\n"
        head += "user root;\n" if os.geteuid() == 0 else ""
        (tmp_path / "nginx.conf").write_text(head + conf)
        process = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"]
        )
        started.append(process)
        factories.until_up(f"http://127.0.0.1:{port}/v1/models", process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_two_replicas_behind_nginx_hold_stream_and_release(
    database_url: str, unsure_upstream: str, tmp_path: Path, nginx_in_front: Any
) -> None:
    key = factories.make_api_key(database_url)
    env = factories.gateway_env(database_url, unsure_upstream, HITL_HOLD__KEEPALIVE="0.5")
    hitl = str(Path(sys.executable).with_name("hitl"))
    job = subprocess.run([hitl, "migrate", "--bootstrap"], env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    password = re.search(r"First admin login:\s+admin / (\S+)", job.stdout)
    assert password, job.stdout
    log = tmp_path / "replicas.log"
    a = factories.GatewayProcess(env, factories.free_port(), log)
    b = factories.GatewayProcess(env, factories.free_port(), log)
    try:
        lb = nginx_in_front(a.port, b.port)
        answers: dict[int, Any] = {}

        def ask(number: int) -> None:
            sdk = openai.OpenAI(base_url=f"{lb}/v1", api_key=key, max_retries=0, timeout=60)
            answers[number] = sdk.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Question {number}?"}],
                extra_body={"hitl": {"wait": 45}},
            )

        threads = [threading.Thread(target=ask, args=(number,)) for number in range(4)]
        for thread in threads:
            thread.start()
        stream_body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Stream me?"}],
            "stream": True,
            "hitl": {"wait": 45},
        }
        with httpx.Client(base_url=lb, timeout=60) as http:
            with http.stream(
                "POST", "/v1/chat/completions", json=stream_body, headers={"Authorization": f"Bearer {key}"}
            ) as stream:
                lines = stream.iter_lines()
                # Held: keep-alive comments come through nginx before any decision (it buffers nothing).
                first = next(line for line in lines if line)
                assert first.startswith(":"), first
                with factories.sync_session(database_url) as session:
                    held = session.exec(select(Review)).all()
                assert len(held) >= 1
                factories.until(lambda: len(_reviews(database_url)) == 5, 30, "five held reviews")
                # The admin decides all five through nginx: each request may land on either replica.
                with httpx.Client(base_url=lb, timeout=30) as console:
                    token = factories.csrf_token(console.get("/console/login").text)
                    login = {"username": "admin", "password": password.group(1), "csrftoken": token, "next": "/"}
                    assert console.post("/console/login", data=login).status_code == 303
                    for review in _reviews(database_url):
                        decision = {"action": "edit", "text": f"Decided {review.id}.", "csrftoken": token}
                        assert console.post(f"/console/reviews/{review.id}/decide", data=decision).status_code == 303
                rest = "\n".join(lines)
        for thread in threads:
            thread.join(30)
    finally:
        a.stop()
        b.stop()
    assert '"status": "edited"' in rest or '"status":"edited"' in rest
    assert "data: [DONE]" in rest
    assert len(answers) == 4
    for answer in answers.values():
        assert answer.choices[0].message.content == f"Decided {answer.model_extra['hitl']['review_id']}."


def _reviews(url: str) -> list[Review]:
    with factories.sync_session(url) as session:
        return list(session.exec(select(Review)).all())
