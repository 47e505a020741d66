"""The export pipeline on real decisions (made through the review desk): records and their provenance, the
formats by name, the proof that every pair belongs to its prompt, filters, quality checks, deduplication,
the split, the cursor and the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from gateway import db
from gateway.conversation.prompt_keys import prompt_key
from gateway.datasets import filters, formats, manifest, records
from gateway.datasets.export import Exporter, Plan, Split
from gateway.datasets.quality import Quality
from gateway.errors import InvalidRequest
from gateway.models import Decision, Exchange, PreferencePair, Review
from gateway.review.decisions import candidate_message
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL, REFUND_TOOLS


def by_review(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["review_id"]: row for row in rows}


async def test_every_decision_is_a_record_with_its_provenance(
    decided: dict[str, str], database_url: str, agent: tuple[str, str], senior: tuple[str, str]
) -> None:
    found = by_review(await factories.export_rows(database_url, "records", dedupe=False))
    assert set(found) == set(decided.values())

    edit = found[decided["edit"]]
    assert edit["prompt"] == [{"role": "user", "content": "Capital of France?"}] and edit["tools"] is None
    assert edit["candidate"] == {"role": "assistant", "content": "Lyon."}
    assert edit["final"] == {"role": "assistant", "content": "Paris."}
    assert (edit["action"], edit["tags"], edit["comment"]) == ("edit", ["wrong-facts"], "wrong city")
    assert (edit["agent"], edit["tier"], edit["kind"]) == (agent[0], "agent", "hold")
    policy = edit["policy_version"]
    assert policy.startswith("default-3@")  # the bundled policy, and a hash of its text
    assert (edit["model"], edit["policy_version"], edit["calibrator"]) == (MODEL, policy, "default")
    assert edit["upstream_model"] == "gpt-4o-mini" and 0 < edit["confidence"] < 1
    assert edit["signals"]["choices"] and edit["signals"]["formula"]
    assert edit["asked_at"] <= edit["held_at"] <= edit["decided_at"]
    with factories.sync_session(database_url) as session:
        review = session.get(Review, decided["edit"])
        decision = session.exec(select(Decision).where(Decision.review_id == decided["edit"])).one()
    assert review is not None and edit["exchange_id"] == review.exchange_id and edit["decision_id"] == decision.id

    approve = found[decided["approve"]]
    assert approve["final"] == approve["candidate"] == {"role": "assistant", "content": "Yes, it shipped today."}

    override = found[decided["override"]]
    assert (override["agent"], override["tags"]) == (senior[0], ["policy"])
    assert override["final"]["content"] == "Use the cancel link in your order email."

    tool = found[decided["tool_call"]]
    assert tool["tools"] == REFUND_TOOLS
    (candidate_call,) = tool["candidate"]["tool_calls"]
    (final_call,) = tool["final"]["tool_calls"]
    assert json.loads(candidate_call["function"]["arguments"]) == {"order_id": "42", "amount": 500}
    assert json.loads(final_call["function"]["arguments"]) == {"order_id": "42", "amount": 50}
    assert final_call["id"] == candidate_call["id"] == "call_a" and tool["final"]["content"] == "Refunding now."


async def test_each_pair_belongs_to_its_prompt_and_its_answers_differ(
    decided: dict[str, str], database_url: str
) -> None:
    """The proof pairing is not assumed: every DPO row, traced back through its metadata to the exchange it
    came from, has that exchange's prompt, the model's candidate as rejected, what the client got as
    chosen, and the two differ."""
    options = formats.Options(with_metadata=True)
    rows = await factories.export_rows(database_url, "dpo", options=options, dedupe=False, quality=Quality())
    assert len(rows) == 4  # edit, override, near_duplicate, tool_call: not the approval, not the case-only edit
    with factories.sync_session(database_url) as session:
        for row in rows:
            exchange = session.get(Exchange, row["metadata"]["exchange_id"])
            assert exchange is not None
            assert row["prompt"] == exchange.request["messages"]
            assert row["rejected"] == [{k: v for k, v in candidate_message(exchange.response).items() if v is not None}]
            (chosen,) = row["chosen"]
            assert chosen.get("tool_calls") == exchange.final_tool_calls or chosen["content"] == exchange.final_text
            assert row["chosen"] != row["rejected"]
            assert row["metadata"]["review_id"] in decided.values()


async def test_the_formats_by_name(decided: dict[str, str], database_url: str) -> None:
    dpo = await factories.export_rows(database_url, "dpo")
    # The case-only edit is dropped, the approval is not a pair, and of the two "capital of France" prompts
    # only the newest (the near-duplicate's edit) is kept.
    assert sorted(row["chosen"][0]["content"] for row in dpo) == [
        "Paris, of course.",
        "Refunding now.",
        "Use the cancel link in your order email.",
    ]
    tool_row = next(row for row in dpo if "tools" in row)
    assert json.loads(tool_row["tools"]) == REFUND_TOOLS
    assert isinstance(tool_row["chosen"][0]["tool_calls"], list)

    kto = await factories.export_rows(database_url, "kto")
    labels = sorted((row["completion"][0].get("content") or "", row["label"]) for row in kto)
    assert labels == [
        ("I cannot help with that.", False),  # the overridden candidate
        ("Paris, of course.", True),
        ("Refunding now.", True),
        ("Use the cancel link in your order email.", True),
        ("Yes, it shipped today.", True),
        ("we open at 9.", True),  # a case-only edit is still a good answer, but its candidate no negative
    ]
    tagged = await factories.export_rows(database_url, "kto", dedupe=False)
    assert ("Lyon.", False) in [(row["completion"][0]["content"], row["label"]) for row in tagged]  # tagged edit

    openai_rows = await factories.export_rows(database_url, "openai-preference")
    assert len(openai_rows) == 3
    tool = next(row for row in openai_rows if "tools" in row["input"])
    assert tool["input"]["tools"] == REFUND_TOOLS and tool["input"]["messages"][0]["role"] == "user"
    assert set(tool) == {"input", "preferred_output", "non_preferred_output"}
    assert tool["preferred_output"][0]["role"] == tool["non_preferred_output"][0]["role"] == "assistant"

    sft = await factories.export_rows(database_url, "sft")
    assert len(sft) == 5
    assert all(row["messages"][-1]["role"] == "assistant" for row in sft)
    assert {"role": "assistant", "content": "Yes, it shipped today."} in [row["messages"][-1] for row in sft]

    standard = await factories.export_rows(database_url, "dpo-standard")
    override = next(row for row in standard if row["chosen"].startswith("Use the cancel"))
    assert override == {
        "prompt": "User: Cancel my order\n\nAssistant:",
        "chosen": "Use the cancel link in your order email.",
        "rejected": "I cannot help with that.",
    }
    tool_text = next(row for row in standard if row["prompt"].startswith("User: Refund"))
    assert json.loads(tool_text["chosen"].split("\n", 1)[1])[0]["function"]["name"] == "issue_refund"


async def test_a_chat_template_renders_the_standard_prompt(
    decided: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "tokenizer_config.json"
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    config.write_text(json.dumps({"chat_template": template}))
    options = formats.Options(template=formats.ChatTemplate.load(config))
    rows = await factories.export_rows(database_url, "dpo-standard", options=options)
    assert "<|user|>Cancel my order\n<|assistant|>" in [row["prompt"] for row in rows]
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    with pytest.raises(InvalidRequest, match="not a valid Jinja template"):
        formats.ChatTemplate.load(broken)
    with pytest.raises(InvalidRequest, match="no `chat_template`"):
        config.write_text("{}")
        formats.ChatTemplate.load(config)


async def test_filters_narrow_the_records(
    decided: dict[str, str], database_url: str, agent: tuple[str, str], senior: tuple[str, str]
) -> None:
    async def reviews(**given: Any) -> set[str]:
        rows = await factories.export_rows(database_url, "records", filters=filters.parse(given), dedupe=False)
        return {row["review_id"] for row in rows}

    everything = await factories.export_rows(database_url, "records", dedupe=False)
    times = sorted(row["decided_at"] for row in everything)
    assert await reviews(actions=["approve"]) == {decided["approve"]}
    assert await reviews(tags=["policy"]) == {decided["override"]}
    assert await reviews(tags=["policy", "wrong-facts"]) == {decided["override"], decided["edit"]}
    assert await reviews(agents=[senior[0]]) == {decided["override"], decided["tool_call"]}
    assert await reviews(tiers=["senior"]) == {decided["tool_call"]}
    assert await reviews(models=["another-model"]) == set()
    assert await reviews(models=[MODEL]) == set(decided.values())
    assert await reviews(since=times[1], until=times[3]) == {decided["approve"], decided["override"]}
    confidences = sorted(row["confidence"] for row in everything if row["confidence"] is not None)
    assert await reviews(min_confidence=1.0) == set()
    assert len(await reviews(max_confidence=confidences[-1])) == len(confidences)

    for bad, says in (
        ({"actions": ["escalate"]}, "do not close a review"),
        ({"tags": ["rude"]}, "unknown reason tags"),
        ({"since": times[3], "until": times[1]}, "since must be before until"),
        ({"min_confidence": 0.9, "max_confidence": 0.1}, "min_confidence must not be above"),
        ({"min_confidence": 2}, "less than or equal to 1"),
        ({"since": "yesterday"}, "since"),
        ({"after_cursor": -1}, "greater than or equal to 0"),
    ):
        with pytest.raises(InvalidRequest, match=says):
            filters.parse(bad)


async def test_an_incremental_export_continues_after_the_cursor(
    decided: dict[str, str],
    database_url: str,
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
) -> None:
    engine = db.create_engine(database_url)
    try:
        first = Exporter(Plan(formats.named("records")))
        rows = [row async for _, row in first.stream(engine, await records.snapshot(engine))]
        assert len(rows) == 5 and first.tally.cursor == max(row["decision_id"] for row in rows)
        runtime: Runtime = app.state.runtime
        answer = factories.completion_body("Ten.", logprob=-0.2)
        later = await factories.held_review(aclient, upstream, api_key, "How many items?", answer)
        await factories.decide_as(runtime, agent[0], later, factories.Action.APPROVE)
        after = filters.parse({"after_cursor": first.tally.cursor})
        rest = [row async for _, row in Exporter(Plan(formats.named("records"), after)).stream(engine, 10**9)]
        assert [row["review_id"] for row in rest] == [later]
    finally:
        await engine.dispose()


async def test_quality_drops_trivial_pairs_and_says_why(decided: dict[str, str], database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:

        async def tally(**plan: Any) -> dict[str, Any]:
            exporter = Exporter(Plan(formats.named("dpo"), **plan))
            [row async for row in exporter.stream(engine, await records.snapshot(engine))]
            return exporter.tally.summary()

        assert await tally() == {
            "records_read": 6,
            "rows": {"train": 3},
            "dropped": {"whitespace_or_case_only": 1, "not_a_pair": 1, "duplicate_prompt": 1},
        }
        # "Paris, of course." against "Lyon" is a large edit; a refund of 50 for 500 changes one character.
        strict = await tally(quality=Quality(min_edit_ratio=0.1))
        assert strict["dropped"]["edit_below_min_ratio"] == 1 and strict["rows"] == {"train": 2}
        kept = await tally(dedupe=False)
        assert kept["rows"] == {"train": 4} and "duplicate_prompt" not in kept["dropped"]
    finally:
        await engine.dispose()


def test_near_duplicate_prompts_share_a_key_and_different_ones_do_not() -> None:
    def ask(text: str, **extra: Any) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": text}], **extra}

    assert prompt_key(ask("Where is my refund?")) == prompt_key(ask("where is my  REFUND"))
    assert prompt_key(ask("Where is my refund?")) != prompt_key(ask("Where is my order?"))
    assert prompt_key(ask("Refund 42")) != prompt_key(ask("Refund 42", tools=REFUND_TOOLS))
    system = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund 42"}]}
    assert prompt_key(system) != prompt_key(ask("Refund 42"))


async def test_the_split_keeps_each_prompt_on_one_side(decided: dict[str, str], database_url: str) -> None:
    sides_seen = set()
    for seed in range(12):
        split = Split(0.5, str(seed))
        rows = await factories.export_rows(
            database_url, "records", split=split, dedupe=False, options=formats.Options()
        )
        by_key: dict[str, set[str]] = {}
        for row in rows:
            key = prompt_key({"messages": row["prompt"], "tools": row["tools"]})
            by_key.setdefault(key, set()).add(split.side(key))
        assert all(len(sides) == 1 for sides in by_key.values())  # the two "capital" prompts: one side
        sides_seen |= {side for sides in by_key.values() for side in sides}
    assert sides_seen == {"train", "test"}


async def test_files_and_their_manifest(decided: dict[str, str], database_url: str, tmp_path: Path) -> None:
    engine = db.create_engine(database_url)
    try:
        plan = Plan(formats.named("kto"), filters.parse({"actions": ["edit", "override"]}), split=Split(0.5, "7"))
        written = await manifest.write_files(engine, plan, tmp_path / "out" / "kto.jsonl")
    finally:
        await engine.dispose()
    on_disk = json.loads((tmp_path / "out" / "kto.manifest.json").read_text())
    assert on_disk["counts"] == written["counts"] and on_disk["format"] == "kto"
    assert on_disk["filters"] == {"actions": ["edit", "override"]}
    assert on_disk["split"] == {"test_size": 0.5, "seed": "7", "by": "prompt key"}
    assert on_disk["row_schema"]["label"] == "boolean" and on_disk["versions"]["policies"][0].startswith("default-3@")
    assert on_disk["cursor"]["next"] >= 6 and on_disk["dropped"] == {"duplicate_prompt": 1}
    assert sum(on_disk["counts"].values()) == 5
    for described in on_disk["files"]:
        data = (tmp_path / "out" / described["name"]).read_bytes()
        assert described["sha256"] == hashlib.sha256(data).hexdigest() and described["bytes"] == len(data)
        assert len(data.splitlines()) == described["rows"] == on_disk["counts"][described["split"]]
        assert described["name"] == f"kto.{described['split']}.jsonl"


async def test_an_older_decisions_crlf_is_exported_as_newlines(decided: dict[str, str], database_url: str) -> None:
    """Decisions made before line endings were normalized kept the browser's CRLF: the export reads them as LF."""
    with factories.sync_session(database_url) as session:
        decision = session.exec(select(Decision).where(Decision.review_id == decided["edit"])).one()
        pair = session.exec(select(PreferencePair).where(PreferencePair.decision_id == decision.id)).one()
        pair.chosen_message = {"role": "assistant", "content": "Paris.\r\n\r\nIt is the capital.\r"}
        session.add(pair)
        session.commit()
    found = by_review(await factories.export_rows(database_url, "records", dedupe=False))
    assert found[decided["edit"]]["final"]["content"] == "Paris.\n\nIt is the capital.\n"
