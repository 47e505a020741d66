"""The bytes a client receives, pinned: whatever the gateway does to go faster (how it parses, stores and
serializes), a released answer, its replay, a held one and a stream carry exactly these bytes: compact UTF-8
JSON written by orjson (`gateway/conversation/wire.py`). Against what the standard library would write (the gateway
did until it switched), every key, string and number is the same and in the same order; only exponents are
spelled differently (`1e-6` for `1e-06`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select
from sse_starlette import ServerSentEvent

from gateway.conversation import wire
from gateway.models import Exchange
from tests import factories
from tests.factories import MODEL

# Tiny and huge floats are where JSON writers differ (`1e-05` or `1e-5`): the answer has both.
TOKENS = [
    factories.token("Paris", -1.0728836e-06, [("Lyon", -14.5), ("Nice", -1e-05)]),
    factories.token(" is", -0.0001, [(" was", -9.25), (" remains", -123456789.0)]),
    factories.token(" it", -2.5e-07, [(" \u00e9t\u00e9", -3.0), ("\u2028", -4.0)]),
]


def upstream_body() -> dict[str, Any]:
    body = factories.completion_body("Paris is it")
    body["choices"][0]["logprobs"] = {"content": TOKENS, "refusal": None}
    return body


def wire_json(value: Any) -> bytes:
    return orjson.dumps(value)


def stdlib_json(value: Any) -> bytes:
    """How Starlette's JSONResponse writes it: the gateway's bytes before orjson."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def same_json(ours: bytes, theirs: bytes) -> bool:
    """The same document, value for value (floats compared exactly), keys in the same order."""
    pairs = json.loads(ours, object_pairs_hook=list), json.loads(theirs, object_pairs_hook=list)
    return pairs[0] == pairs[1]


def expected_release(exchange_id: str, confidence: float, top: int) -> dict[str, Any]:
    body = upstream_body()
    choice = body["choices"][0]
    content = [{**token, "top_logprobs": token["top_logprobs"][:top]} for token in TOKENS]
    return {
        "id": exchange_id,
        "object": "chat.completion",
        "created": body["created"],
        "model": MODEL,
        "system_fingerprint": body["system_fingerprint"],
        "choices": [{**choice, "logprobs": {**choice["logprobs"], "content": content}}],
        "usage": body["usage"],
        "hitl": {"status": "released", "confidence": confidence, "exchange_id": exchange_id},
    }


def test_a_released_answer_and_its_replay_are_these_bytes(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(upstream_body())
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "logprobs": True, "top_logprobs": 2}
    auth = {"Authorization": f"Bearer {api_key}"}
    released = client.post("/v1/chat/completions", json=ask, headers=auth)
    got = released.json()
    assert got["hitl"]["status"] == "released"
    document = expected_release(got["id"], got["hitl"]["confidence"], 2)
    expected = wire_json(document)
    assert released.content == expected and same_json(released.content, stdlib_json(document))
    assert b"-1.0728836e-6" in released.content and b"-2.5e-7" in released.content  # orjson's exponents
    replay = client.post("/v1/chat/completions", json=ask, headers={**auth, "x-stainless-retry-count": "1"})
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == expected


@pytest.mark.parametrize("top", [5, 2, None])
def test_a_released_answers_choices_are_written_once(
    client: TestClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    top: int | None,
) -> None:
    """The choices (about 85 KB with their logprobs) are written as JSON once, for the stored row and for the
    client's body alike: every logprob the upstream sent, some of them, or none."""
    whole, part = [], []
    dumps = orjson.dumps

    def spy(value: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(value, wire.Written):
            part.append(value)
        elif isinstance(value, dict) and isinstance(value.get("choices"), list) and "finish_reason" in str(value):
            whole.append(value)  # an answer whose choices are written out again
        return dumps(value, *args, **kwargs)

    upstream.answer(upstream_body())
    logprobs = {"logprobs": True, "top_logprobs": top} if top else {}
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], **logprobs}
    monkeypatch.setattr(orjson, "dumps", spy)
    released = client.post("/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {api_key}"})
    monkeypatch.undo()
    got = released.json()
    expected = expected_release(got["id"], got["hitl"]["confidence"], top or 0)
    if not top:
        expected["choices"][0]["logprobs"] = None
    assert released.content == wire_json(expected)
    assert len(part) == 1 and whole == []
    with factories.sync_session(database_url) as session:
        stored = session.exec(select(Exchange)).one().response
    assert stored["choices"] == expected["choices"]


def test_without_logprobs_asked_none_are_sent(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(upstream_body())
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
    released = client.post("/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {api_key}"})
    got = released.json()
    expected = expected_release(got["id"], got["hitl"]["confidence"], 0)
    expected["choices"][0]["logprobs"] = None
    assert released.content == wire_json(expected) and same_json(released.content, stdlib_json(expected))


STREAMED = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Capital?"}],
    "stream": True,
    "stream_options": {"include_usage": True},
    "logprobs": True,
    "top_logprobs": 1,
}


def data_of(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def expected_events(first: dict[str, Any]) -> list[str]:
    """The events of the streamed release of `upstream_body()`, whose first chunk is `first`."""
    whole = expected_release(first["id"], first["hitl"]["confidence"], 1)
    base = {key: whole[key] for key in ("id", "created", "model", "system_fingerprint")}
    base |= {"object": "chat.completion.chunk", "hitl": whole["hitl"], "usage": None}

    def chunk(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return orjson.dumps({**base, "choices": [choice]}).decode()

    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Paris is it"}, whole["choices"][0]["logprobs"]),
        chunk({}, finish="stop"),
        orjson.dumps({**base, "choices": [], "usage": whole["usage"]}).decode(),
        "[DONE]",
    ]


def test_a_streamed_release_is_these_events(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(upstream_body())
    auth = {"Authorization": f"Bearer {api_key}"}
    with client.stream("POST", "/v1/chat/completions", json=STREAMED, headers=auth) as r:
        text = r.read().decode()
    assert r.headers["x-hitl-status"] == "released"
    events = data_of(text)
    assert events == expected_events(json.loads(events[0]))
    # The whole body, byte for byte: what sse-starlette writes for each event, and nothing else (a fast
    # upstream: no keep-alive before the answer).
    assert text == "".join(ServerSentEvent(data=event).encode().decode() for event in events)


def test_an_sse_event_is_what_sse_starlette_writes() -> None:
    """The gateway writes its events itself (one write per answer); they are the bytes `ServerSentEvent` makes,
    even for strings holding line breaks, which JSON escapes."""
    for value in ({"a": "line\nbreak\r\nand\rmore", "b": "\u2028\u2029"}, {"n": 1e-06, "s": "é"}, []):
        assert wire.event(value) == ServerSentEvent(data=wire.dumps(value)).encode()
    assert wire.DONE == ServerSentEvent(data="[DONE]").encode()


@pytest.mark.keepalive(1.0)
def test_a_slow_upstream_streams_keepalives_then_the_same_events(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    """Past one keep-alive interval (1 s here) the 200 goes out with `x-hitl-status: generating` and comments
    follow while the upstream generates, so an idle-timeout proxy does not cut it; then the same events."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2.6)
        return httpx.Response(200, json=upstream_body())

    upstream.respond(slow)
    auth = {"Authorization": f"Bearer {api_key}"}
    with client.stream("POST", "/v1/chat/completions", json=STREAMED, headers=auth) as r:
        text = r.read().decode()
    assert r.status_code == 200 and r.headers["x-hitl-status"] == "generating"
    before = text[: text.index("data: ")]
    assert before.startswith(": generating") and before.count(": ping") >= 1
    events = data_of(text)
    assert events == expected_events(json.loads(events[0]))
    assert json.loads(events[0])["hitl"]["status"] == "released"


@pytest.mark.keepalive(1.0)
def test_a_slow_upstream_that_fails_ends_the_stream_with_its_error(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    async def slow_failure(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.4)
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    upstream.respond(slow_failure)
    auth = {"Authorization": f"Bearer {api_key}"}
    with client.stream("POST", "/v1/chat/completions", json=STREAMED, headers=auth) as r:
        text = r.read().decode()
    assert r.headers["x-hitl-status"] == "generating"
    (event,) = data_of(text)
    assert json.loads(event)["error"]["type"] == "upstream_error"


def test_a_held_answer_decided_is_these_bytes(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    hitl = factories.held(client, upstream, api_key, text="Lyon.")
    token = factories.console_login(client, *agent)
    client.post(
        f"/console/reviews/{hitl['review_id']}/decide", data={"action": "edit", "text": "Paris.", "csrftoken": token}
    )
    polled = client.get(f"/v1/reviews/{hitl['review_id']}", headers={"Authorization": f"Bearer {api_key}"})
    completion = polled.json()["completion"]
    upstream_answer = factories.completion_body("Lyon.", logprob=-0.2)
    expected = {
        "id": hitl["exchange_id"],
        "object": "chat.completion",
        "created": upstream_answer["created"],
        "model": MODEL,
        "system_fingerprint": upstream_answer["system_fingerprint"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": upstream_answer["usage"],
        "hitl": {
            "status": "edited",
            "confidence": hitl["confidence"],
            "exchange_id": hitl["exchange_id"],
            "review_id": hitl["review_id"],
            "tier": "agent",
        },
    }
    assert completion == expected
    assert orjson.dumps(completion).decode() in polled.text


def test_a_released_answer_keeps_only_what_its_client_was_sent(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    """Released unseen: only the client's view is stored (here no logprobs); held: the whole body, for the
    heat map. The signals behind the confidence are stored either way."""
    upstream.answer(upstream_body())
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
    client.post("/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {api_key}"})
    factories.held(client, upstream, api_key, text="Lyon.")
    with factories.sync_session(database_url) as session:
        released, held = session.exec(select(Exchange).order_by(col(Exchange.created_at))).all()
    assert released.response["choices"][0]["logprobs"] is None and released.signals["choices"]
    assert len(held.response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2  # all the upstream gave


def test_an_approved_answer_carries_only_the_logprobs_its_client_asked_for(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    """The held answer is stored whole (two alternatives a token); approved, the client asked for one."""
    hitl = factories.held(client, upstream, api_key, text="Lyon.", logprobs=True, top_logprobs=1)
    token = factories.console_login(client, *agent)
    client.post(f"/console/reviews/{hitl['review_id']}/decide", data={"action": "approve", "csrftoken": token})
    polled = client.get(f"/v1/reviews/{hitl['review_id']}", headers={"Authorization": f"Bearer {api_key}"})
    completion = polled.json()["completion"]
    assert completion["hitl"]["status"] == "approved"
    tokens = completion["choices"][0]["logprobs"]["content"]
    assert tokens and all(len(token["top_logprobs"]) == 1 for token in tokens)
