"""The heat map shows exactly the text the customer gets, in every script: tokens that split a character are
merged at byte level (OpenAI's `bytes`), or laid over the answer where the provider sends no bytes (llama.cpp's
empty and partial pieces)."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console import heatmap
from gateway.conversation.bundled import local_model_available
from gateway.conversation.upstream import LocalLlama
from gateway.settings import LocalModelSettings
from tests import factories
from tests.factories import MODEL, console_login

ANSWERS = {
    "japanese": "パスワードをリセットするには、設定ページを開いてください。",
    "arabic": "لإعادة تعيين كلمة المرور، افتح صفحة الإعدادات.",
    "emoji": "Done 👍🏽 — our family 👨‍👩‍👧 thanks you 🎉",
    "combining": "Cafe\u0301 Zoe\u0308 n\u0303 a\u0323\u0302 (decomposed accents)",
    "latin": "Paris is the capital of France.",
}


def _chunks(answer: str, size: int) -> list[bytes]:
    raw = answer.encode()
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def openai_tokens(answer: str, size: int = 2) -> list[dict[str, Any]]:
    """Tokens as OpenAI reports them: a piece that is not whole UTF-8 as `bytes:\\x..`, every one with `bytes`."""
    found = []
    for index, chunk in enumerate(_chunks(answer, size)):
        try:
            text = chunk.decode()
        except UnicodeDecodeError:
            text = "bytes:" + "".join(f"\\x{b:02x}" for b in chunk)
        logprob = -0.05 if index % 3 else -1.6
        found.append({"token": text, "logprob": logprob, "bytes": list(chunk), "top_logprobs": []})
    return found


def llama_tokens(answer: str, size: int = 2, logprob: float = -0.05) -> list[dict[str, Any]]:
    """Tokens as llama.cpp's server reports them: each piece decoded alone, partial bytes dropped, no bytes."""
    return [
        {"token": chunk.decode(errors="ignore"), "logprob": logprob, "bytes": None, "top_logprobs": []}
        for chunk in _chunks(answer, size)
    ]


def response(answer: str, tokens: list[dict[str, Any]]) -> dict[str, Any]:
    body = factories.completion_body(answer)
    body["choices"][0]["logprobs"] = {"content": tokens, "refusal": None}
    return body


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("script", list(ANSWERS))
@pytest.mark.parametrize("provider", [openai_tokens, llama_tokens])
def test_the_heat_map_spells_the_answer_exactly(provider: Any, script: str, size: int) -> None:
    answer = ANSWERS[script]
    shown = heatmap.tokens(response(answer, provider(answer, size)))
    assert "".join(token.text for token in shown) == answer
    assert all(token.text for token in shown) and "\ufffd" not in "".join(token.text for token in shown)


def test_merged_bytes_show_the_least_likely_token_and_whole_tokens_keep_their_alternatives() -> None:
    tokens = [
        {"token": "bytes:\\xe3\\x83", "logprob": -0.01, "bytes": [0xE3, 0x83], "top_logprobs": []},
        {"token": "bytes:\\x91", "logprob": -2.0, "bytes": [0x91], "top_logprobs": []},
        {"token": "!", "logprob": -0.5, "bytes": [0x21], "top_logprobs": [{"token": "?", "logprob": -1.2}]},
    ]
    first, second = heatmap.tokens(response("ヒ!", tokens))
    assert (first.text, first.level) == ("ヒ", "very-low")  # exp(-2.0) = 14%
    assert "least likely of the 2 tokens" in first.alternatives
    assert (second.text, second.alternatives) == ("!", "p = 61%; alternatives: '?' 30%")


def test_tokens_that_do_not_spell_the_answer_take_the_stretch_between_those_that_do() -> None:
    """A provider that trims or garbles: the map still shows the answer, never the garbled pieces."""
    tokens = [
        {"token": " Hello", "logprob": -0.1},
        {"token": "\ufffd", "logprob": -0.3},
        {"token": "\ufffd", "logprob": -0.2},
        {"token": " world", "logprob": -0.1},
    ]
    shown = heatmap.tokens(response("Hello 🌍 world", tokens))
    assert "".join(token.text for token in shown) == "Hello 🌍 world"
    assert "\ufffd" not in "".join(token.text for token in shown)


def test_no_logprobs_no_heat_map() -> None:
    assert heatmap.tokens(factories.completion_body("Hi", logprob=None)) == []


def test_the_review_page_renders_exactly_the_answer(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    answer = ANSWERS["japanese"] + " " + ANSWERS["arabic"] + " " + ANSWERS["emoji"]
    upstream.answer(response(answer, llama_tokens(answer, logprob=-0.7)))  # unsure: held
    body = {"model": MODEL, "messages": [{"role": "user", "content": "?"}], "hitl": {"wait": 0}}
    reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert reply.json()["hitl"]["status"] == "pending", reply.text
    review_id = reply.json()["hitl"]["review_id"]
    console_login(client, *agent)
    page = client.get(f"/console/reviews/{review_id}").text
    found = re.search(r'<pre class="heatmap">(.*?)</pre>', page, re.S)
    assert found is not None
    assert html.unescape(re.sub(r"<[^>]+>", "", found.group(1))) == answer


@pytest.mark.slow
def test_the_bundled_models_japanese_is_shown_whole() -> None:
    """llama.cpp reports a token that splits a character as an empty piece: the map still spells the answer."""
    if not local_model_available():
        pytest.skip("the bundled model is not installed")
    model = LocalLlama(LocalModelSettings(max_tokens=40))  # in its own process, as the gateway runs it
    try:
        prompt = "Say in Japanese: reset your password. Use Japanese characters."
        body = {"messages": [{"role": "user", "content": prompt}], "logprobs": True, "top_logprobs": 2}
        answer = asyncio.run(model.complete({**body, "temperature": 0}))
    finally:
        model.close()
    text = answer["choices"][0]["message"]["content"]
    pieces = [item["token"] for item in answer["choices"][0]["logprobs"]["content"]]
    assert any(ord(c) > 0x3000 for c in text) and "".join(pieces) != text  # the model's own pieces lose characters
    assert "".join(token.text for token in heatmap.tokens(answer)) == text
