"""Progressive release (`stream: progressive`): a streamed answer reaches its client sentence by sentence while each
sentence's own confidence clears the release band, before the upstream has finished; the first sentence that does
not stops the flow, and the rest is held with what was released fixed: the review page shows it as sent, an agent
decides the rest, the waiting client gets that on the same stream, and the export's pair is the released part plus
the agent's rest against the whole candidate. Nothing held is ever sent."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Action, Exchange
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests import factories
from tests.factories import MODEL

PROGRESSIVE = """\
version: progressive-1
tiers: [agent, senior]
stream: progressive
bands:
  - {min: 0.9, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: agent}
"""
SURE = ["Paris is the capital of France. ", "It lies on the Seine. "]
UNSURE = "Its population is 42."


def answer(sentences: list[tuple[str, float]]) -> dict[str, Any]:
    """A completion whose words carry each sentence's logprob."""
    tokens = []
    for sentence, logprob in sentences:
        words = sentence.split(" ")
        tokens += [factories.token(w + (" " if i < len(words) - 1 else ""), logprob) for i, w in enumerate(words)]
    tokens = [token for token in tokens if token["token"]]
    text = "".join(sentence for sentence, _ in sentences)
    body = factories.completion_body(text, logprob=None)
    body["choices"][0]["logprobs"] = {"content": tokens, "refusal": None}
    return body


HALF_SURE = answer([(SURE[0], -0.001), (SURE[1], -0.001), (UNSURE, -2.0)])
ALL_SURE = answer([(SURE[0], -0.001), (SURE[1], -0.001), ("It is old.", -0.001)])


@pytest.fixture
def progressive_app(make_settings: Callable[..., Settings], tmp_path: Path, clock: factories.ManualClock) -> FastAPI:
    policy = tmp_path / "policy.yaml"
    policy.write_text(PROGRESSIVE)
    return create_app(make_settings(policy_path=policy), clock=clock)


def deltas(sse: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The content deltas a chat stream carried, in order, and its chunks."""
    chunks = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: {")]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    return [text for text in texts if text], chunks


def stored(database_url: str) -> Exchange:
    with factories.sync_session(database_url) as session:
        (exchange,) = session.exec(select(Exchange)).all()
    return exchange


def ask(client: TestClient, key: str, wait: float = 0, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Paris."}], "stream": True,
            "hitl": {"wait": wait}, **extra}  # fmt: skip
    return client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def test_confident_sentences_flow_and_the_first_unsure_one_holds_the_rest(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(HALF_SURE)
    with TestClient(progressive_app) as client:
        sent = ask(client, api_key)
    assert sent.headers["x-hitl-status"] == "progressive"
    texts, chunks = deltas(sent.text)
    exchange = stored(database_url)
    assert exchange.status == "held" and exchange.reason.startswith("progressive:")
    # The released prefix is exactly what the client was sent before the hold, sentence by sentence.
    assert texts[:2] == SURE and exchange.released_chars == len("".join(SURE))
    assert exchange.candidate_text[: exchange.released_chars] == "".join(SURE)
    assert "population" not in sent.text  # nothing of the held rest
    assert chunks[-1]["hitl"]["status"] == "pending" and chunks[0]["id"] == exchange.id


def test_an_answer_whose_every_sentence_clears_is_released_progressively(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(ALL_SURE)
    with TestClient(progressive_app) as client:
        sent = ask(client, api_key)
    texts, chunks = deltas(sent.text)
    assert texts == [*SURE, "It is old."]
    exchange = stored(database_url)
    assert exchange.status == "released" and exchange.released_chars == len(exchange.candidate_text)
    assert chunks[-1]["hitl"]["status"] == "released" and sent.text.endswith("data: [DONE]\r\n\r\n")


def test_a_stream_rule_makes_only_the_requests_it_matches_progressive(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clock: factories.ManualClock,
    api_key: str,
    upstream: factories.UpstreamMock,
) -> None:
    policy = tmp_path / "policy.yaml"
    rule = "rules:\n  - name: live-chat\n    when: {metadata.channel: web}\n    stream: progressive\n"
    policy.write_text(PROGRESSIVE.replace("stream: progressive\n", "") + rule)
    upstream.answer(ALL_SURE)
    with TestClient(create_app(make_settings(policy_path=policy), clock=clock)) as client:
        web = ask(client, api_key, metadata={"channel": "web"})
        other = ask(client, api_key, metadata={"channel": "email"})
    assert web.headers["x-hitl-status"] == "progressive" and deltas(web.text)[0] == [*SURE, "It is old."]
    assert other.headers["x-hitl-status"] == "released"  # buffered: decided before its headers went out
    assert "".join(deltas(other.text)[0]) == "".join([*SURE, "It is old."])


def test_the_first_sentence_reaches_the_client_before_the_upstream_has_finished(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock
) -> None:
    """The upstream writes its last sentence only once the client has its first: a gateway that buffers would
    wait for ever (the test's timeout)."""
    events = factories.stream_of(ALL_SURE).split(b"\n\n")
    first_read = threading.Event()

    async def paced() -> AsyncIterator[bytes]:
        for event in events:
            if b"It is old" in event:
                while not first_read.is_set():
                    await asyncio.sleep(0.01)
            yield event + b"\n\n"

    upstream.respond(
        lambda request: httpx.Response(200, content=paced(), headers={"content-type": "text/event-stream"})
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Paris?"}], "stream": True}
    with TestClient(progressive_app) as client:
        with client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
        ) as sent:
            received = ""
            for line in sent.iter_lines():
                received += line + "\n"
                if SURE[0] in received:
                    first_read.set()
    assert "It is old." in received


async def test_an_agents_edit_of_the_rest_arrives_on_the_waiting_stream_and_in_the_export(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    upstream.answer(HALF_SURE)
    app = progressive_app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as aclient:
            runtime: Runtime = app.state.runtime
            sdk = openai.AsyncOpenAI(
                base_url="http://testserver/v1", api_key=api_key, http_client=aclient, max_retries=0
            )

            async def read() -> str:
                stream = await sdk.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Tell me about Paris."}], stream=True,
                    extra_body={"hitl": {"wait": 10}},
                )  # fmt: skip
                return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

            reading = asyncio.ensure_future(read())
            review = await factories.open_review(runtime)
            page = await aconsole_page(aclient, agent, review.id)
            assert 'id="sent"' in page and SURE[1].strip() in page.split('id="sent"')[1].split("</pre>")[0]
            assert UNSURE in page.split('id="answer"')[1].split("</textarea>")[0]  # the rest, to decide
            await factories.decide_as(runtime, agent[0], review.id, Action.EDIT, "Its population is 2.1 million.")
            received = await asyncio.wait_for(reading, 10)
    assert received == "".join(SURE) + "Its population is 2.1 million."
    exchange = stored(database_url)
    assert exchange.final_text == received and exchange.status == "edited"
    (pair,) = await factories.export_rows(database_url, "dpo")
    assert pair["chosen"][-1]["content"] == received
    assert pair["rejected"][-1]["content"] == exchange.candidate_text


async def aconsole_page(client: httpx.AsyncClient, who: tuple[str, str], review_id: str) -> str:
    await factories.aconsole_login(client, *who)
    page = await client.get(f"/console/reviews/{review_id}")
    assert page.status_code == 200, page.text
    return page.text


def test_langchain_streams_a_progressive_answer(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock
) -> None:
    from langchain_openai import ChatOpenAI

    upstream.answer(ALL_SURE)
    with TestClient(progressive_app) as client:
        llm = ChatOpenAI(base_url="http://testserver/v1", api_key=api_key, model=MODEL, http_client=client,  # type: ignore[arg-type]
                         max_retries=0, streaming=True)  # fmt: skip
        pieces = [chunk.content for chunk in llm.stream("Tell me about Paris.")]
    assert "".join(str(piece) for piece in pieces) == "".join([*SURE, "It is old."])
    assert len([piece for piece in pieces if piece]) >= 3  # sentence by sentence


def test_the_openai_stream_helper_reads_a_progressive_answer(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(ALL_SURE)
    with TestClient(progressive_app) as client:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0)
        with sdk.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "Paris?"}]) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_completion()
    assert kinds.count("content.delta") >= 3
    assert final.choices[0].message.content == "".join([*SURE, "It is old."])


def test_the_responses_stream_helper_reads_a_progressive_answer_in_numbered_events(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(ALL_SURE)
    with TestClient(progressive_app) as client:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0)
        with sdk.responses.stream(model=MODEL, input="Tell me about Paris.") as stream:
            events = list(stream)
            final = stream.get_final_response()
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.delta for event in events if event.type == "response.output_text.delta"] == [*SURE, "It is old."]
    assert final.output_text == "".join([*SURE, "It is old."]) and final.status == "completed"


def test_a_held_responses_stream_keeps_what_it_sent_and_nothing_more(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(HALF_SURE)
    body = {"model": MODEL, "input": "Tell me about Paris.", "stream": True, "hitl": {"wait": 0}}
    with TestClient(progressive_app) as client:
        sent = client.post("/v1/responses", json=body, headers={"Authorization": f"Bearer {api_key}"})
    events = [json.loads(line[6:]) for line in sent.text.splitlines() if line.startswith("data: ")]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"][:2] == SURE
    assert "population" not in sent.text and events[-1]["response"]["hitl"]["status"] == "pending"
    assert stored(database_url).released_chars == len("".join(SURE))


def test_the_anthropic_sdk_streams_a_progressive_answer(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock
) -> None:
    import anthropic

    upstream.answer(ALL_SURE)
    upstream.pass_loopback()
    with factories.serving(progressive_app) as base:
        claude = anthropic.Anthropic(base_url=base, api_key=api_key, max_retries=0)
        try:
            with claude.messages.stream(
                model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Tell me about Paris."}]
            ) as stream:
                pieces = list(stream.text_stream)
                final = stream.get_final_message()
        finally:
            claude.close()
    assert pieces == [*SURE, "It is old."]
    assert final.content[0].type == "text" and final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn"


def test_an_empty_answer_is_routed_as_if_buffered(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    """Nothing to release is not everything released: an empty answer takes the policy's `unscored` route."""
    upstream.answer(factories.completion_body("", logprob=None))
    with TestClient(progressive_app) as client:
        sent = ask(client, api_key)
    assert stored(database_url).status == "held" and sent.headers["x-hitl-status"] == "progressive"


def test_an_upstream_that_fails_after_released_sentences_leaves_them_on_the_failed_exchange(
    progressive_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    """The stream is cut after the second sentence: the client has both and then an error, and the failed
    exchange records what it was sent (nothing a client received goes unrecorded)."""
    events = factories.stream_of(ALL_SURE).split(b"\n\n")
    cut = next(number for number, event in enumerate(events) if b"Seine" in event) + 1
    upstream.respond(
        lambda request: httpx.Response(
            200, content=b"".join(e + b"\n\n" for e in events[:cut]), headers={"content-type": "text/event-stream"}
        )
    )
    with TestClient(progressive_app) as client:
        sent = ask(client, api_key)
    texts, _ = deltas(sent.text)
    assert texts == SURE and '"error"' in sent.text
    exchange = stored(database_url)
    assert exchange.status == "failed" and exchange.error_kind == "malformed"
    assert exchange.candidate_text == "".join(SURE) and exchange.released_chars == len("".join(SURE))
