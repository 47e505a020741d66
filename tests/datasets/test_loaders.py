"""The exported files are what the tools expect: every format loads with Hugging Face `datasets`, its fields
have the names and types TRL and OpenAI document, and TRL's own data helpers (`is_conversational`,
`maybe_apply_chat_template`, `unpair_preference_dataset`) accept them. TRL installs without torch
(`pip install --no-deps trl`, done by `make install`); its helpers need only `datasets` and `transformers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl.data_utils import is_conversational, maybe_apply_chat_template, unpair_preference_dataset

from gateway import db
from gateway.datasets import formats, manifest
from gateway.datasets.export import Plan

# A chat template in the shape of the common ones (ChatML-like), tools and tool calls included.
TEMPLATE = (
    "{% if tools %}<|tools|>{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] or '' }}"
    "{% for call in m.get('tool_calls') or [] %}<|call|>{{ call['function']['name'] }}"
    "{{ call['function']['arguments'] }}{% endfor %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer built here, offline: a word-level vocabulary is enough to apply a chat template."""
    core = Tokenizer(models.WordLevel({"[UNK]": 0, "<|end|>": 1}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, chat_template=TEMPLATE, eos_token="<|end|>")


@pytest.fixture
async def files(decided: dict[str, str], database_url: str, tmp_path: Path) -> dict[str, Path]:
    """Every format written to a file, with metadata, from the six decisions of `decided_dataset`."""
    engine = db.create_engine(database_url)
    written = {}
    try:
        for name in formats.NAMES:
            plan = Plan(formats.named(name), options=formats.Options(with_metadata=True), dedupe=False)
            written[name] = tmp_path / f"{name}.jsonl"
            await manifest.write_files(engine, plan, written[name])
    finally:
        await engine.dispose()
    return written


def load(path: Path) -> datasets.Dataset:
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert isinstance(loaded, datasets.Dataset)
    return loaded


def messages_in(loaded: datasets.Dataset, column: str) -> list[dict[str, Any]]:
    """Every message of a list-of-messages column, as loaded. `datasets` types the column as a list of
    structs, or of `Json` when the messages differ in shape (some with tool calls): either way a message
    comes back as a dict with a string role and a string (or absent) content."""
    found = [message for row in loaded[column] for message in row]
    for message in found:
        assert isinstance(message, dict) and isinstance(message["role"], str)
        assert isinstance(message.get("content"), str | None)
    return found


def test_conversational_dpo_loads_and_trl_applies_its_template(
    files: dict[str, Path], tokenizer: PreTrainedTokenizerFast
) -> None:
    dpo = load(files["dpo"])
    assert {"prompt", "chosen", "rejected", "metadata"} <= set(dpo.column_names) and len(dpo) == 4
    assert {message["role"] for message in messages_in(dpo, "prompt")} == {"user"}
    for column in ("chosen", "rejected"):
        assert {message["role"] for message in messages_in(dpo, column)} == {"assistant"}
    calls = [message["tool_calls"] for message in messages_in(dpo, "chosen") if message.get("tool_calls")]
    assert calls and isinstance(calls[0][0]["function"], dict)  # structured, not a JSON string
    for example in dpo:
        assert is_conversational(example)
        rendered = maybe_apply_chat_template(example, tokenizer, tools=None)
        assert rendered["prompt"].endswith("<|assistant|>") and rendered["chosen"] != rendered["rejected"]
        assert rendered["chosen"].endswith("<|end|>\n")
    tool = next(example for example in dpo if example["tools"] is not None)
    # As TRL's trainers do with a `tools` column: a JSON string is decoded before the template sees it.
    rendered = maybe_apply_chat_template(tool, tokenizer, tools=json.loads(tool["tools"]))
    assert '<|tools|>[{"type": "function"' in rendered["prompt"]
    assert "<|call|>issue_refund" in rendered["chosen"] and '"amount":50' in rendered["chosen"]


def test_unpair_preference_dataset_turns_dpo_into_kto_rows(files: dict[str, Path]) -> None:
    unpaired = unpair_preference_dataset(load(files["dpo"]).remove_columns(["metadata", "tools"]))
    assert set(unpaired.column_names) == {"prompt", "completion", "label"} and len(unpaired) == 8
    assert sorted(unpaired["label"]) == [False] * 4 + [True] * 4


def test_kto_is_unpaired_with_a_boolean_label(files: dict[str, Path], tokenizer: PreTrainedTokenizerFast) -> None:
    kto = load(files["kto"])
    assert kto.features["label"].dtype == "bool"
    assert {"prompt", "completion", "label"} <= set(kto.column_names)
    assert kto["label"].count(False) == 2  # the overridden candidate and the tagged edit's
    for example in kto:
        assert is_conversational(example)
        rendered = maybe_apply_chat_template(example, tokenizer)
        assert rendered["prompt"].endswith("<|assistant|>") and rendered["completion"]


def test_standard_dpo_is_text(files: dict[str, Path], tokenizer: PreTrainedTokenizerFast) -> None:
    standard = load(files["dpo-standard"])
    assert all(standard.features[column].dtype == "string" for column in ("prompt", "chosen", "rejected"))
    example = standard[0]
    assert not is_conversational(example)
    assert maybe_apply_chat_template(example, tokenizer) == example  # left as it is: already text


def test_sft_messages_end_with_the_final_answer(files: dict[str, Path], tokenizer: PreTrainedTokenizerFast) -> None:
    sft = load(files["sft"])
    assert len(messages_in(sft, "messages")) == 12 and len(sft) == 6
    for example in sft:
        assert is_conversational(example) and example["messages"][-1]["role"] == "assistant"
        assert maybe_apply_chat_template(example, tokenizer)["text"].endswith("<|end|>\n")


def test_openai_preference_has_the_documented_fields(files: dict[str, Path]) -> None:
    """The shape of OpenAI's DPO fine-tuning file (also Together's and Fireworks'): `input.messages`, and one
    assistant message in each of `preferred_output` and `non_preferred_output`."""
    preference = load(files["openai-preference"])
    assert set(preference.column_names) == {"input", "preferred_output", "non_preferred_output", "metadata"}
    assert any(example["input"].get("tools") for example in preference)  # a list, as OpenAI takes it
    for example in preference:
        assert example["input"]["messages"][0]["role"] == "user"
        for side in ("preferred_output", "non_preferred_output"):
            assert [message["role"] for message in example[side]] == ["assistant"]
        assert example["preferred_output"] != example["non_preferred_output"]


def test_records_and_metadata_load(files: dict[str, Path]) -> None:
    found = load(files["records"])
    assert len(found) == 6 and {"review_id", "exchange_id", "signals", "confidence"} <= set(found.column_names)
    metadata = load(files["kto"]).features["metadata"]
    assert metadata["decided_at"].dtype == "string" and metadata["signals"].dtype == "string"
