"""The house rules the layout promises, checked: what the request path imports, what the console may
touch, and that importing builds nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.factories import MODEL, UPSTREAM

ROOT = Path(__file__).parents[1]

# Runs in a fresh interpreter: this test process has long since imported scikit-learn for other tests.
SERVE_ONE_REQUEST = f"""
import sys, httpx, respx
from fastapi.testclient import TestClient
from gateway.app import create_app
from gateway.settings import Settings, UpstreamSettings, LocalModelSettings, AuditSettings
from tests import factories

url = sys.argv[1]
settings = Settings(
    database_url=url,
    upstreams=[UpstreamSettings(name={MODEL!r}, api_base={UPSTREAM!r})],
    local_model=LocalModelSettings(enabled=False),
    audit=AuditSettings(rate=0.0),
)
key = factories.make_api_key(url)
factories.make_agent(url, "ada", "correct horse")
with factories.mocked({UPSTREAM!r}) as mock, TestClient(create_app(settings)) as client:
    unsure = factories.completion_body("Lyon.", logprob=-0.2)
    mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=unsure))
    question = {{"model": {MODEL!r}, "messages": [{{"role": "user", "content": "Capital?"}}], "hitl": {{"wait": 0}}}}
    held = client.post("/v1/chat/completions", json=question, headers={{"Authorization": "Bearer " + key}})
    assert held.json()["hitl"]["status"] == "pending", held.text
    factories.console_login(client, "ada", "correct horse")
    assert client.get("/console/reviews/" + held.json()["hitl"]["review_id"]).status_code == 200
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("sklearn", "matplotlib"))
print(",".join(heavy))
"""


def test_serving_never_imports_sklearn_or_matplotlib(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_REQUEST, database_url], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""  # not one module of either


def test_importing_the_console_builds_nothing() -> None:
    code = (
        "import console, console.rendering, console.auth, gateway.review.logins as logins, gateway.review.agents as a\n"
        "from jinja2_fragments.fastapi import Jinja2Blocks\n"
        "modules = (console.rendering, console.auth)\n"
        "built = [m for m in modules for v in vars(m).values() if isinstance(v, Jinja2Blocks)]\n"
        "assert not built, built\n"
        "assert logins._dummy_hash.cache_info().currsize == 0 and a.password_hasher.cache_info().currsize == 0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_console_holds_no_sql_and_the_gateway_never_imports_the_console() -> None:
    for path in (ROOT / "console").rglob("*.py"):
        text = path.read_text()
        assert "select(" not in text, path
        assert not {name for name in _imports(path) if name.split(".")[0] in ("sqlalchemy", "sqlmodel")}, path
    for path in (ROOT / "gateway").rglob("*.py"):
        assert not {name for name in _imports(path) if name.split(".")[0] == "console"}, path


def test_sklearn_and_matplotlib_are_imported_only_by_the_learning_loop() -> None:
    for path in (ROOT / "gateway").rglob("*.py"):
        heavy = {name for name in _imports(path) if name.split(".")[0] in ("sklearn", "matplotlib")}
        assert not heavy or path.parent.name == "learning", (path, heavy)


# Each in a fresh interpreter: the CPU seconds an import takes, and the heavy packages it pulled in.
IMPORT_COST = """
import sys, time
started = time.process_time()
import {module}
spent = time.process_time() - started
print(spent, ",".join(sorted({{name.split(".")[0] for name in sys.modules}})))
"""
# What serving never needs at start: litellm and openai (a non-OpenAI upstream's first call), alembic (migrations
# run before serving), the learning loop's and the export's libraries, the bundled model, the CLI's progress bars.
NOT_AT_START = {"litellm", "openai", "alembic", "sklearn", "matplotlib", "transformers", "llama_cpp", "tqdm", "torch"}
# The frameworks the app is built on, which any import of it pays for.
FRAMEWORKS = "fastapi, sqlalchemy.ext.asyncio, sqlmodel, aiohttp, httpx, psycopg, pydantic_settings"


def import_cost(module: str) -> tuple[float, set[str]]:
    """The cheapest of three fresh imports (the first may compile bytecode), and what it imported."""
    runs = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_COST.format(module=module)], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        spent, names = done.stdout.split()
        runs.append((float(spent), set(names.split(","))))
    return min(runs, key=lambda run: run[0])


def test_the_app_and_the_cli_import_in_little_more_than_their_frameworks() -> None:
    """`hitl serve --workers N` imports the CLI and then the app in every worker before it can answer uvicorn's
    health check: they once took 9.4 s on a loaded machine (litellm's client library, the export's and the learning
    loop's at import). Budgeted in CPU seconds, which a busy machine inflates far less than wall time, as a ratio to
    the frameworks' own import in the same run (seconds alone differ from one machine to the next: 0.85 s here,
    1.35 s there, for the same code)."""
    frameworks, _ = import_cost(FRAMEWORKS)
    for module, ratio in (("gateway.app", 2.0), ("gateway.cli", 1.0)):
        spent, imported = import_cost(module)
        assert not imported & NOT_AT_START, (module, imported & NOT_AT_START)
        assert spent < ratio * frameworks, (module, spent, frameworks)
