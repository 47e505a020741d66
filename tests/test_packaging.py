"""What ships, tested as it ships: the wheel built from exactly what the Dockerfile copies, installed into a fresh
virtual environment (no editable install, no checkout on the path), runs `hitl --help`, `hitl migrate` and
answers a request, console included. Every test elsewhere runs on the editable install, which hid a wheel
without `gateway.datasets`."""

from __future__ import annotations

import re
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import factories
from tests.factories import MODEL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def image_sources() -> list[str]:
    """What the Dockerfile copies into the image before its install step."""
    install = DOCKERFILE.index("pip install")
    copies = re.findall(r"^COPY (.+) \S+$", DOCKERFILE[:install], flags=re.MULTILINE)
    return [source for line in copies for source in line.split()]


def packages_in_the_tree() -> set[str]:
    """Every package of ours in the checkout (a folder with an `__init__.py`), by the name it installs as."""
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("gateway", "console")
        for init in (ROOT / top).rglob("__init__.py")
    }
    return found | {"gateway.prompts"}  # prompts/ installs inside the gateway package


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel built from the image's sources installed: its `bin` folder."""
    work = tmp_path_factory.mktemp("package")
    source = work / "src"
    source.mkdir()
    for name in image_sources():
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    venv.create(work / "venv", with_pip=True)
    pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work / "dist"), str(source)], capture_output=True)
    assert built.returncode == 0, built.stderr.decode()[-3000:]
    (wheel,) = (work / "dist").glob("hitl_gateway-*.whl")
    done = subprocess.run([*pip, "install", str(wheel)], capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    yield work / "venv" / "bin"


def run(bin: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_dockerfile_copies_everything_the_build_reads_and_runs_as_a_user() -> None:
    assert {"pyproject.toml", "setup.py", "README.md", "gateway", "console", "prompts"} <= set(image_sources())
    users = re.findall(r"^USER (\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users


def test_the_wheel_holds_every_package_of_the_tree(installed: Path, tmp_path: Path) -> None:
    names = sorted(packages_in_the_tree())
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\nimport gateway.app"
    done = subprocess.run([str(installed / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run(
        [str(installed / "python"), "-c", "import gateway; print(gateway.__file__)"], cwd=tmp_path, text=True,
        capture_output=True,
    )  # fmt: skip
    assert str(installed.parent) in where.stdout and str(ROOT) not in where.stdout, where.stdout


def test_the_installed_gateway_migrates_and_answers(
    installed: Path, database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    env = factories.gateway_env(database_url, unsure_upstream, PATH=f"{installed}:/usr/bin:/bin")
    env.pop("PYTHONPATH", None)
    helped = run(installed, "hitl", "--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0 and "serve" in helped.stdout and "migrate" in helped.stdout, helped.stderr
    migrated = run(installed, "hitl", "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0 and "database is up to date" in migrated.stdout, migrated.stderr
    key = factories.make_api_key(database_url)
    port = factories.free_port()
    gateway = factories.GatewayProcess(env, port, tmp_path / "gateway.log", hitl=installed / "hitl")
    try:
        question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0}}
        answer = httpx.post(
            f"{gateway.base}/v1/chat/completions", json=question, headers={"Authorization": f"Bearer {key}"}
        )
        login = httpx.get(f"{gateway.base}/console/login")
        style = httpx.get(f"{gateway.base}/console/static/console.css")
    finally:
        gateway.stop()
    assert answer.status_code == 200 and answer.json()["hitl"]["status"] == "pending", answer.text
    assert answer.json()["choices"][0]["message"]["content"]  # the placeholder template shipped
    assert login.status_code == 200 and "csrftoken" in login.text  # the console's templates shipped
    assert style.status_code == 200  # and its static files
