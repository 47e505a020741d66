"""The official openai-python SDK's own chat-completion `create` tests, from its sdist, pass against a live
gateway that has only a default upstream (so the tests' model names, e.g. `gpt-5.4`, all reach it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gateway.app import create_app
from gateway.settings import Settings, UpstreamSettings
from tests import factories
from tests.factories import UPSTREAM

pytestmark = pytest.mark.slow
SUITE = "tests/api_resources/chat/test_completions.py"
SDK_API_KEY = "My API Key"  # what the SDK's tests send as their key


def _fetch_sdist(into: Path) -> Path:
    """The sdist of the installed openai release, downloaded once (through pip, from the package index this
    machine installs from) and unpacked."""
    release = version("openai")
    unpacked = into / f"openai-{release}"
    if (unpacked / SUITE).is_file():
        return unpacked
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    fetched = subprocess.run([*command, "-d", str(into), f"openai=={release}"], capture_output=True, text=True)
    archive = into / f"openai-{release}.tar.gz"
    if fetched.returncode != 0 or not archive.is_file():
        message = f"could not download the openai {release} sdist: {fetched.stderr[-500:]}"
        if os.environ.get("HITL_REQUIRE_SDK_SUITE"):
            pytest.fail(message)
        pytest.skip(message)
    with tarfile.open(archive) as packed:
        packed.extractall(into, filter="data")
    return unpacked


@pytest.fixture(scope="module")
def sdist() -> Path:
    return _fetch_sdist(Path(sys.prefix) / "hitl-test-cache")


@pytest.fixture
def gateway(make_settings, database_url: str, upstream: factories.UpstreamMock) -> Iterator[str]:
    default = UpstreamSettings(name="default-llm", provider="openai", model="gpt-4o-mini", api_base=UPSTREAM)
    settings: Settings = make_settings(upstreams=[default], default_upstream="default-llm")
    factories.make_api_key(database_url, "sdk-suite", plaintext=SDK_API_KEY)
    upstream.answer(factories.completion_body("Paris is the capital of France."))
    with factories.serving(create_app(settings)) as base:
        yield base


def test_the_sdks_own_create_tests_pass_against_the_gateway(sdist: Path, gateway: str) -> None:
    env = {**os.environ, "TEST_API_BASE_URL": f"{gateway}/v1", "OPENAI_TEST_HTTP_CLIENT": "httpx"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", SUITE, "-k", "create", "-o", "addopts=", "-p", "no:cacheprovider", "-q"],
        cwd=sdist,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    # 9 create tests (with the one that refuses pydantic models): sync loose and strict, async loose, strict, aiohttp.
    assert passed and int(passed.group(1)) >= 45, summary


RESPONSES_SUITE = "tests/api_resources/test_responses.py"
# The suite is written for a mock server that accepts anything: `responses.create()` with no input, a made-up
# `previous_response_id`, responses that were never made, and endpoints this gateway does not serve. Against the
# gateway each of those must be the error a real server gives, in a shape the SDK turns into its own exception;
# the SDK's client-side tests must pass. Nothing may be a 5xx, a connection error or a body the SDK cannot read.
EXPECTED = [
    # (test names starting with, the SDK exception, what its message must say)
    (("test_method_create_overload", "test_raw_response_create", "test_streaming_response_create"),
     "openai.BadRequestError", "Missing required parameter: 'input'"),
    (("test_method_create_with_all_params",), "openai.NotFoundError", "No response with id 'previous_response_id'"),
    (("test_method_retrieve", "test_raw_response_retrieve", "test_streaming_response_retrieve", "test_method_cancel",
      "test_raw_response_cancel", "test_streaming_response_cancel"),
     "openai.NotFoundError", "No response with id 'resp_677efb5139a88190b512bc3fef8e535d'"),
    (("test_method_delete", "test_raw_response_delete", "test_streaming_response_delete", "test_method_compact",
      "test_raw_response_compact", "test_streaming_response_compact"),
     "openai.APIStatusError", "is not served. This gateway serves"),
]  # fmt: skip


def _expected(name: str) -> tuple[str, str] | None:
    for starts, error, says in EXPECTED:
        if name.startswith(starts):
            return error, says
    return None


def test_the_sdks_own_responses_tests_get_a_real_servers_answers(sdist: Path, gateway: str, tmp_path: Path) -> None:
    env = {**os.environ, "TEST_API_BASE_URL": f"{gateway}/v1", "OPENAI_TEST_HTTP_CLIENT": "httpx"}
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", RESPONSES_SUITE, "-o", "addopts=", "-p", "no:cacheprovider", "-q",
         f"--junitxml={report}"],
        cwd=sdist, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    cases = list(ElementTree.parse(report).iter("testcase"))
    passed = unexpected = 0
    for case in cases:
        name = str(case.get("name"))
        bad = next((found for found in (case.find("failure"), case.find("error")) if found is not None), None)
        expected = _expected(name)
        if bad is None:
            passed += 1
            assert expected is None, f"{name} passed, so the gateway accepted what it must refuse"
            continue
        message = bad.get("message") or ""
        if expected is None or not message.startswith(expected[0] + ":") or expected[1] not in message:
            unexpected += 1
            print(name, message[:400])
    assert unexpected == 0, f"{unexpected} of the SDK's tests failed otherwise than a real server would make them"
    # create, retrieve, cancel, delete and compact, sync (loose, strict) and async (loose, strict, aiohttp)
    assert len(cases) >= 150 and passed >= 16, (len(cases), passed)
