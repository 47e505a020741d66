"""Three ways to an export: `hitl export` (files with a manifest, or stdout), the admin API for pipelines
(an export key, streamed JSONL), and the console's Datasets page (admins: counts per format, downloads)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.models import KeyRole
from tests import factories

runner = CliRunner()


async def test_the_command_writes_the_split_and_its_manifest(decided: dict[str, str], env: str, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "sft.jsonl"
    arguments = ["export", "-f", "sft", "-o", str(out), "--test-size", "0.5", "--seed", "3", "--with-metadata"]
    result = await asyncio.to_thread(runner.invoke, cli, arguments)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "exports" / "sft.manifest.json").read_text())
    summary = json.loads(result.stderr[result.stderr.index("{") :])
    assert summary["counts"] == written["counts"] and summary["files"] == written["files"]
    assert sum(written["counts"].values()) == 5 and written["with_metadata"] is True
    for described in written["files"]:
        rows = [json.loads(line) for line in (out.parent / described["name"]).read_text().splitlines()]
        assert len(rows) == described["rows"] and all(row["metadata"]["review_id"] for row in rows)
    # Continuing from the cursor: nothing new yet.
    again = await asyncio.to_thread(runner.invoke, cli, ["export", "--after-cursor", str(written["cursor"]["next"])])
    assert again.exit_code == 0 and again.stdout == ""


async def test_the_admin_api_streams_an_export_for_an_export_key(
    decided: dict[str, str], aclient: httpx.AsyncClient, api_key: str, database_url: str
) -> None:
    export_key = factories.make_api_key(database_url, "pipeline", role=KeyRole.EXPORT)
    auth = {"Authorization": f"Bearer {export_key}"}
    answer = await aclient.get("/admin/exports/kto", params={"tag": "policy"}, headers=auth)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in answer.text.splitlines()]
    assert sorted(row["label"] for row in rows) == [False, True]  # the override: its answer and its candidate
    assert int(answer.headers["x-hitl-export-cursor"]) >= 6

    sides = {}
    for side in ("train", "test"):
        query = {"test_size": "0.5", "seed": "3", "split": side, "keep_duplicates": "true"}
        sides[side] = (await aclient.get("/admin/exports/records", params=query, headers=auth)).text.splitlines()
    assert len(sides["train"]) + len(sides["test"]) == 6 and not set(sides["train"]) & set(sides["test"])

    # A client key calls the chat API, not this; an export key does not call the chat API.
    refused = await aclient.get("/admin/exports/dpo", headers={"Authorization": f"Bearer {api_key}"})
    assert refused.status_code == 403 and "--role export" in refused.json()["error"]["message"]
    assert (await aclient.get("/admin/exports/dpo")).status_code == 401
    chat = {"model": factories.MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    assert (await aclient.post("/v1/chat/completions", json=chat, headers=auth)).status_code == 403

    for path, query, says in (
        ("/admin/exports/csv", {}, "Unknown export format 'csv'"),
        ("/admin/exports/dpo", {"min_confidence": "high"}, "min_confidence"),
        ("/admin/exports/dpo", {"test_size": "2"}, "test_size must be between 0 and 0.9"),
        ("/admin/exports/dpo", {"split": "test"}, "split=test needs a test_size"),
        ("/admin/exports/dpo", {"with_metadata": "maybe"}, "with_metadata must be true or false"),
        ("/admin/exports/dpo", {"action": "escalate"}, "do not close a review"),
    ):
        bad = await aclient.get(path, params=query, headers=auth)
        assert bad.status_code == 400 and says in bad.json()["error"]["message"], bad.text


async def test_the_console_page_counts_every_format_and_downloads_one(
    decided: dict[str, str], aclient: httpx.AsyncClient, database_url: str, agent: tuple[str, str]
) -> None:
    factories.make_agent(database_url, "root", "admin password 1", factories.Role.ADMIN)
    await factories.aconsole_login(aclient, "root", "admin password 1")
    page = await aclient.get("/console/exports")
    assert page.status_code == 200
    assert 'id="format-dpo"' in page.text and "Datasets" in page.text
    rows_of = {
        name: page.text.split(f'id="format-{name}"')[1].split('class="rows">')[1].split("<")[0]
        for name in ("dpo", "kto", "sft", "records", "openai-preference", "dpo-standard")
    }
    assert rows_of == {
        "dpo": "3",
        "kto": "6",
        "sft": "5",
        "records": "5",
        "openai-preference": "3",
        "dpo-standard": "3",
    }
    assert "duplicate prompt: 1" in page.text

    narrowed = await aclient.get("/console/exports", params={"tag": "policy", "test_size": "0.5"})
    assert 'class="rows">1<' in narrowed.text.split('id="format-dpo"')[1] and "split=test" in narrowed.text
    download = await aclient.get("/console/exports/download/dpo", params={"tag": "policy"})
    assert download.headers["content-disposition"] == 'attachment; filename="dpo.jsonl"'
    (row,) = [json.loads(line) for line in download.text.splitlines()]
    assert row["chosen"][0]["content"] == "Use the cancel link in your order email."
    bad = await aclient.get("/console/exports", params={"min_confidence": "lots"})
    assert bad.status_code == 400 and "min_confidence: Input should be a valid number" in bad.text

    await factories.aconsole_login(aclient, *agent)
    assert (await aclient.get("/console/exports")).status_code == 403
    assert (await aclient.get("/console/exports/download/dpo")).status_code == 403
