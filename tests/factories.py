"""Plain functions that put rows in the database for a test, through a short-lived sync session."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import respx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from sqlalchemy import create_engine
from sqlmodel import Session, col, select

from gateway import db
from gateway.datasets import formats, records
from gateway.datasets.export import Exporter, Plan
from gateway.learning import labels
from gateway.models import (
    Action,
    Agent,
    ApiKey,
    DeadlineOutcome,
    Decision,
    EventKind,
    Exchange,
    ExchangeStatus,
    KeyRole,
    Review,
    ReviewEvent,
    ReviewKind,
    ReviewStatus,
    Role,
    Route,
)
from gateway.relay import apikeys
from gateway.review.decisions import Decided
from gateway.review.desk import ReviewDesk
from gateway.runtime import Runtime

UPSTREAM = "http://upstream.test/v1"
MODEL = "support-bot"
TEMPLATES = Path(__file__).parents[1] / "console" / "templates"

_hasher = PasswordHash.recommended()


class ManualClock:
    """Real time, which a test can jump ahead: claims run out and logins expire without sleeping, while
    timestamps still agree with the wall clock for tests that time a release."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app on a real port of 127.0.0.1, in a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_upstream(body: dict[str, Any]) -> FastAPI:
    """An OpenAI-compatible server that answers every chat completion with `body`, for gateways that run in
    another process (respx mocks only this one)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        if (await request.json()).get("stream"):  # streamed as such a server streams it
            return Response(stream_of(body), media_type="text/event-stream")
        return JSONResponse(body)

    return app


def gateway_env(database_url: str, upstream_base: str, **extra: str) -> dict[str, str]:
    """The environment of a `hitl serve` process: this machine's, less any HITL_* of the caller's, with the
    test's database, one upstream at `upstream_base`, no self-check, no audit draws."""
    upstreams = [{"name": MODEL, "api_base": upstream_base, "model": "gpt-4o-mini"}]
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("HITL_")},
        "HITL_DATABASE_URL": database_url,
        "HITL_UPSTREAMS": json.dumps(upstreams),
        "HITL_LOCAL_MODEL__ENABLED": "false",
        "HITL_SELFCHECK__MODE": "never",
        "HITL_AUDIT__RATE": "0",
        "HITL_SECRET_KEY": "process-test",
        "HITL_HOLD__POLL_INTERVAL": "0.2",
        "HITL_UNDO_SECONDS": "0",  # console decisions at once, unless a test is about the undo window
        **extra,
    }


def sdk_clients(
    base: str, key: str, count: int, answers: dict[int, Any], *, wait: float = 60, max_retries: int = 0
) -> list[threading.Thread]:
    """`count` real OpenAI SDK clients in threads, each asking its own question of the gateway at `base` and
    waiting up to `wait` s if held; each answer (or the SDK's exception) lands in `answers[number]`."""

    def ask(number: int) -> None:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=max_retries, timeout=90)
        try:
            answers[number] = sdk.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Question {number}?"}],
                extra_body={"hitl": {"wait": wait}},
            )
        except openai.OpenAIError as exc:
            answers[number] = exc

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(count)]
    for thread in threads:
        thread.start()
    return threads


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for `check()` to hold, polling; fail the test with `what` when it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until `url` answers at all (any status), while `process` is still running."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"{process.args!r} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{url} did not come up"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)


class GatewayProcess:
    """A real `hitl serve` in its own process group on a loopback port; `kill()` ends it (and its workers) with
    SIGKILL. Every one still running when its test ends is stopped by `stop_every_gateway` (conftest), so no test
    leaves a server behind, failed or not, even one that never came up."""

    running: ClassVar[set[GatewayProcess]] = set()

    def __init__(
        self, env: dict[str, str], port: int, log: Path, *args: str, startup: float = 60, hitl: Path | None = None
    ) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._log = log.open("ab")
        hitl = hitl or Path(sys.executable).with_name("hitl")
        command = [str(hitl), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        GatewayProcess.running.add(self)
        try:
            until_up(f"{self.base}/v1/models", self.process, startup)
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._signal_group(signal.SIGKILL)  # a worker the parent did not take down with it
        until(self._group_gone, 10, "the server's process group to end")
        GatewayProcess.running.discard(self)
        self._log.close()

    def _group_gone(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def _signal_group(self, sent: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, sent)
        except ProcessLookupError:
            pass  # the whole group is gone already


def stop_every_gateway() -> list[str]:
    """Stop every `GatewayProcess` still running; the commands of those that were, for the test's report."""
    left = list(GatewayProcess.running)
    for gateway in left:
        gateway.stop()
    return [" ".join(map(str, gateway.process.args)) for gateway in left]


@contextmanager
def sync_session(url: str) -> Iterator[Session]:
    """A sync session on its own engine, disposed after, so no connection outlives the test."""
    engine = create_engine(db.sync_url(url))
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def open_reviews(url: str) -> list[str]:
    """The ids of the reviews waiting for an agent."""
    with sync_session(url) as session:
        return list(session.exec(select(Review.id).where(col(Review.status) == ReviewStatus.OPEN)).all())


def make_api_key(url: str, name: str = "test", plaintext: str | None = None, role: KeyRole = KeyRole.CLIENT) -> str:
    """A gateway API key; `plaintext` gives one a foreign test suite already uses."""
    plaintext = plaintext or apikeys.KEY_PREFIX + name + "-" + "x" * 20
    with sync_session(url) as session:
        session.add(ApiKey(name=name, role=role, prefix=plaintext[:11], key_hash=apikeys.hash_key(plaintext)))
        session.commit()
    return plaintext


def make_agent(url: str, username: str = "ada", password: str = "correct horse", role: Role = Role.AGENT) -> Agent:
    with sync_session(url) as session:
        agent = Agent(username=username, password_hash=_hasher.hash(password), role=role)
        session.add(agent)
        session.commit()
        session.refresh(agent)
        return agent


def token(text: str, logprob: float, alternatives: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    top = [{"token": text, "logprob": logprob, "bytes": list(text.encode())}]
    top += [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives or []]
    return {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": top}


def completion_body(
    text: str | None = "Paris is the capital of France.",
    *,
    logprob: float | None = -0.01,
    n: int = 1,
    tool_calls: list[dict[str, Any]] | None = None,
    model: str = "gpt-4o-mini-2024-07-18",
) -> dict[str, Any]:
    """An OpenAI chat.completion as an upstream returns it; every token gets `logprob`."""
    words = (text or "").split(" ")
    content = None
    if logprob is not None and text:
        rest = math.log1p(-math.exp(logprob)) if logprob < 0 else -30.0
        content = [token(w if i == 0 else " " + w, logprob, [("x", rest)]) for i, w in enumerate(words)]
    choices = []
    for index in range(n):
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": {"content": content, "refusal": None} if content else None,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        )
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 12 + len(words)},
        "system_fingerprint": "fp_test",
    }


# A policy that holds big refunds for seniors and wires abroad for agents, and releases other tool calls.
# A policy that holds every tool call no rule names (tests of held tool calls in each dialect).
HOLD_TOOL_CALLS = """\
version: hold-tool-calls
tiers: [agent, senior]
bands:
  - {min: 0.9, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: agent}
tool_calls: {route: hold, tier: agent}
"""
# The arguments' schema of the refund tool the tests offer, in whichever dialect's tool shape.
REFUND_PARAMETERS = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["order_id", "amount"],
}
REFUNDS = """\
version: tools-1
tiers: [agent, senior]
bands:
  - {min: 0.9, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: agent}
tool_calls: {route: release}
rules:
  - name: big-refund
    when:
      response.tool_calls.name: issue_refund
      response.tool_calls.arguments.amount: {gt: 100}
    route: hold
    tier: senior
  - name: wire-to-unknown
    when:
      response.tool_calls.arguments.iban: {matches: "^(?!DE)"}
    route: hold
    tier: agent
"""


def tool_call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    """A tool call as the model writes it: `arguments` as JSON text (a string is taken as it is)."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}


async def decide_as(
    runtime: Runtime,
    username: str,
    review_id: str,
    action: Action,
    text: str | None = None,
    comment: str = "",
    *,
    arguments: dict[str, str] | None = None,
    tags: list[str] | None = None,
    desk: ReviewDesk | None = None,
) -> Decided:
    """Decide a review as the named agent, through a review desk (by default the app's own)."""
    async with runtime.sessions() as session:
        agent = (await session.exec(select(Agent).where(Agent.username == username))).one()
    desk = desk or runtime.desk
    return await desk.decide(review_id, agent, action, text=text, arguments=arguments, comment=comment, tags=tags)


def labels_in(url: str) -> labels.Labels:
    """The labelled exchanges `hitl calibrate` and `hitl learn` would fit on, loaded as they load them."""

    async def load() -> labels.Labels:
        engine = db.create_engine(url)
        try:
            async with db.session_factory(engine)() as session:
                return await labels.load_labels(session)
        finally:
            await engine.dispose()

    return asyncio.run(load())


def make_labelled(
    url: str,
    raw: float | None,
    action: Action,
    *,
    api_key_id: int,
    agent_id: int,
    audit_rate: float | None = None,
    p_yes: float | None = None,
    model: str = MODEL,
    logprobs: bool = True,
) -> str:
    """A decided exchange as the learning loop sees it: scored `raw`, then approved, edited or overridden.

    With `audit_rate`, it was released and drawn for the audit queue at that rate; otherwise it was held.
    Without `logprobs`, `raw` is what the self-check said (a provider without logprobs, or a tool call).
    """
    audited = audit_rate is not None
    signals: dict[str, Any] = {"formula": "logprob-v1", "missing": [], "choices": [], "raw_confidence": raw}
    if raw is not None and logprobs:
        signals["choices"] = [
            {"index": 0, "mean_logprob": math.log(raw), "min_prob": raw, "mean_entropy": 1 - raw, "confidence": raw}
        ]
    elif raw is not None:
        signals["choices"] = [{"index": 0, "confidence": None}]
        signals["missing"] = ["logprobs:not_returned"]
        p_yes = raw
    if p_yes is not None:
        signals["selfcheck"] = {"p_yes": p_yes}
    with sync_session(url) as session:
        exchange = Exchange(
            request_id="req",
            api_key_id=api_key_id,
            model=model,
            upstream_model="gpt-4o-mini",
            request={"model": model, "messages": [{"role": "user", "content": "Q?"}]},
            response=completion_body("A."),
            candidate_text="A.",
            signals=signals,
            confidence=raw,
            policy_version="test",
            route=Route.RELEASE if audited else Route.HOLD,
            tier=None if audited else "agent",
            status=ExchangeStatus.RELEASED if audited else ExchangeStatus.HELD,
        )
        session.add(exchange)
        session.flush()
        review = Review(
            exchange_id=exchange.id,
            api_key_id=api_key_id,
            tier="audit" if audited else "agent",
            kind=ReviewKind.AUDIT if audited else ReviewKind.HOLD,
            audit_rate=audit_rate,
            status="decided",
            deadline_at=exchange.created_at,
        )
        session.add(review)
        session.flush()
        text = None if action == Action.APPROVE else "Better."
        session.add(Decision(review_id=review.id, agent_id=agent_id, action=action, text=text))
        session.commit()
        return review.id


async def open_review(runtime: Runtime, timeout: float = 5.0) -> Review:
    """The review the waiting request created, once it is committed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with runtime.sessions() as session:
            review = (await session.exec(select(Review).where(col(Review.status) == ReviewStatus.OPEN))).first()
        if review is not None:
            return review
        await asyncio.sleep(0.01)
    raise AssertionError("no review was created")


# --- the mocked upstream --------------------------------------------------------------------------------


class AiohttpMocker(respx.mocks.AbstractRequestMocker):
    """respx at the gateway's client transport (httpx-aiohttp). respx mocks at httpcore by default, which that
    transport never reaches; here requests and responses are httpx's own, so nothing needs translating."""

    name = "httpx-aiohttp"
    targets = ["httpx_aiohttp.transport.AiohttpTransport"]
    target_methods = ["handle_async_request"]

    @classmethod
    def to_httpx_request(cls, **kwargs: Any) -> httpx.Request:
        request: httpx.Request = kwargs["request"]
        return request

    @classmethod
    async def from_async_httpx_response(cls, httpx_response: httpx.Response, target: Any, **kwargs: Any) -> Any:
        return httpx_response


@contextmanager
def mocked(base_url: str, **options: Any) -> Iterator[respx.MockRouter]:
    """A respx router answering both the gateway's client and plain httpx clients (litellm's, the SDK's)."""
    with respx.mock(base_url=base_url, **options) as router:
        AiohttpMocker.register(router)
        AiohttpMocker.start()
        try:
            yield router
        finally:
            AiohttpMocker.unregister(router)
            AiohttpMocker.stop()


class UpstreamMock:
    """The respx-mocked OpenAI-compatible upstream at `UPSTREAM`, with named routes: `chat` is
    POST /chat/completions. `answer()` gives it one reply, `respond()` a function of the request."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router
        self.chat = router.post("/chat/completions", name="chat")

    def answer(self, body: dict[str, Any] | None = None, status: int = 200) -> respx.Route:
        reply = completion_body() if body is None else body
        return self.chat.mock(
            side_effect=lambda request: streamed_if_asked(request, httpx.Response(status, json=reply))
        )

    def pass_loopback(self) -> respx.Route:
        """Let calls to 127.0.0.1 through (route `loopback`): a real SDK talking to a gateway on a real port."""
        return self.router.route(host="127.0.0.1", name="loopback").pass_through()

    def respond(self, side_effect: Any) -> respx.Route:
        """Answer with `side_effect(request)` (a response, or a coroutine of one), streamed when it was asked so; an
        exception is raised as respx raises it."""
        if not callable(side_effect) or isinstance(side_effect, BaseException | type):
            return self.chat.mock(side_effect=side_effect)

        async def answer(request: httpx.Request) -> httpx.Response:
            reply = side_effect(request)
            return streamed_if_asked(request, await reply if inspect.isawaitable(reply) else reply)

        return self.chat.mock(side_effect=answer)

    def sent(self) -> dict[str, Any]:
        """The body of the last request the gateway sent upstream."""
        body: dict[str, Any] = json.loads(self.chat.calls.last.request.content)
        return body


def streamed_if_asked(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    """`response` as the upstream would stream it when the request asked for a stream (and it is an answer)."""
    is_json = response.headers.get("content-type", "").startswith("application/json")
    if response.status_code != 200 or not is_json or not json.loads(request.content or b"{}").get("stream"):
        return response
    return httpx.Response(200, content=stream_of(response.json()), headers={"content-type": "text/event-stream"})


def stream_of(completion: dict[str, Any]) -> bytes:
    """A chat.completion as an OpenAI-compatible server streams it: the role, then a chunk per logprob token (or
    the text in one), each tool call in two fragments, the finish reason, the usage, `[DONE]`."""
    head = {key: completion.get(key) for key in ("id", "created", "model", "system_fingerprint")}
    choice = completion["choices"][0]
    message = choice.get("message") or {}

    def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
        body = {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, **extra}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    tokens = (choice.get("logprobs") or {}).get("content") or []
    if tokens and message.get("content"):
        out += [chunk({"content": token["token"]}, logprobs={"content": [token]}) for token in tokens]
    elif message.get("content"):
        out.append(chunk({"content": message["content"]}))
    for index, call in enumerate(message.get("tool_calls") or []):
        named = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        out.append(chunk({"tool_calls": [named]}))
        arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        out.append(chunk({"tool_calls": [arguments]}))
    out.append(chunk({}, finish_reason=choice.get("finish_reason") or "stop"))
    usage = {**head, "object": "chat.completion.chunk", "choices": [], "usage": completion.get("usage")}
    out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    return b"".join([*out, b"data: [DONE]\n\n"])


def sse(events: list[dict[str, Any]]) -> bytes:
    """Events as the Responses and Messages APIs stream them: each named by an `event:` line, then its data."""
    return b"".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events)


def responses_stream_of(response: dict[str, Any]) -> bytes:
    """A Response as the Responses API streams it: created and in progress, then each output item added, its text
    a delta per logprob token (or whole), a function call's arguments in two deltas, each item done, and the end
    its status says (completed, incomplete or failed)."""
    started = {**response, "status": "in_progress", "output": []}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": started},
                                    {"type": "response.in_progress", "response": started}]  # fmt: skip
    for index, item in enumerate(response["output"]):
        where = {"output_index": index, "item_id": item.get("id")}
        if item["type"] == "function_call":
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": {**item, "arguments": ""}}
            )
            half = len(item["arguments"]) // 2
            for piece in (item["arguments"][:half], item["arguments"][half:]):
                events.append({"type": "response.function_call_arguments.delta", **where, "delta": piece})
            events.append({"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]})
        elif item["type"] == "message":
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": {**item, "content": []}}
            )
            for number, part in enumerate(item["content"]):
                at = {**where, "content_index": number}
                events.append({"type": "response.content_part.added", **at, "part": {**part, "text": ""}})
                if part["type"] == "refusal":
                    events.append({"type": "response.refusal.delta", **at, "delta": part["refusal"]})
                    continue
                tokens = part.get("logprobs") or []
                pieces = [(token["token"], [token]) for token in tokens] if tokens else [(part["text"], [])]
                events += [{"type": "response.output_text.delta", **at, "delta": text, "logprobs": logprobs}
                           for text, logprobs in pieces]  # fmt: skip
                events.append({"type": "response.output_text.done", **at, "text": part["text"]})
                events.append({"type": "response.content_part.done", **at, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    ending = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
    events.append({"type": ending[response.get("status", "completed")], "response": response})
    return sse([{**event, "sequence_number": number} for number, event in enumerate(events)])


def messages_stream_of(message: dict[str, Any], words: bool = True) -> bytes:
    """A Message as Anthropic's API streams it: `message_start`, a ping, each block started, its text a delta per
    word (or whole) or its input's JSON in two deltas, stopped, then the stop reason and usage, `message_stop`."""
    started = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": started}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            events.append({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
            arguments = json.dumps(block["input"]) if block["input"] else ""
            half = len(arguments) // 2
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}
                       for piece in ("", arguments[:half], arguments[half:]) if arguments]  # fmt: skip
        else:
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            pieces = re.findall(r"\S+\s*|\s+", block["text"]) if words else [block["text"]]
            events += [{"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                       for piece in pieces]  # fmt: skip
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                   "usage": {"output_tokens": message["usage"]["output_tokens"]}})  # fmt: skip
    events.append({"type": "message_stop"})
    return sse(events)


def first_token(*alternatives: tuple[str, float]) -> dict:
    top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in alternatives]
    return {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}


def judge_reply(*, yes: float | None = None, text: str = "", tokens: int = 60) -> dict:
    body = completion_body(text or "x", logprob=None)
    if yes is not None:
        body["choices"][0]["logprobs"] = {"content": [first_token(("Yes", yes), ("No", 1 - yes))]}
    body["usage"] = {"prompt_tokens": tokens - 1, "completion_tokens": 1, "total_tokens": tokens}
    return body


# --- the console ------------------------------------------------------------------------------------------


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert found, "page has no CSRF token"
    return found.group(1)


def console_login(client: TestClient, username: str, password: str) -> str:
    """Log in through the console's own form; returns the CSRF token for later posts."""
    token = csrf_token(client.get("/console/login").text)
    response = client.post(
        "/console/login",
        data={"username": username, "password": password, "csrftoken": token, "next": "/console/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return token


async def aconsole_login(client: httpx.AsyncClient, username: str, password: str) -> str:
    token = csrf_token((await client.get("/console/login")).text)
    response = await client.post(
        "/console/login", data={"username": username, "password": password, "csrftoken": token, "next": "/console/"}
    )
    assert response.status_code == 303, response.text
    return token


def held(client: TestClient, upstream: UpstreamMock, key: str, text: str = "Lyon.", **extra: object) -> dict[str, Any]:
    """Send a question whose answer (`text`, confidence about 0.8) is held for the agent tier; its `hitl` block."""
    upstream.answer(completion_body(text, logprob=-0.2))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "hitl": {"wait": 0},
        **extra,
    }
    response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    hitl: dict[str, Any] = response.json()["hitl"]
    return hitl


# --- datasets ---------------------------------------------------------------------------------------------


async def export_rows(database_url: str, format: str = "dpo", **plan: Any) -> list[dict[str, Any]]:
    """The rows an export in `format` writes now (`plan`: the rest of an export Plan)."""
    engine = db.create_engine(database_url)
    try:
        exporter = Exporter(Plan(formats.named(format), **plan))
        return [row async for _, row in exporter.stream(engine, await records.snapshot(engine))]
    finally:
        await engine.dispose()


def exported(database_url: str, format: str = "dpo", **plan: Any) -> list[dict[str, Any]]:
    return asyncio.run(export_rows(database_url, format, **plan))


REFUND_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id", "amount"],
            },
        },
    }
]


async def held_review(
    aclient: httpx.AsyncClient, upstream: UpstreamMock, key: str, question: str, answer: dict[str, Any], **extra: Any
) -> str:
    """Ask `question`; the upstream answers `answer`, which the bundled policy holds; the review id."""
    upstream.answer(answer)
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "hitl": {"wait": 0}, **extra}
    reply = await aclient.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert reply.json()["hitl"]["status"] == "pending", reply.text
    return str(reply.json()["hitl"]["review_id"])


async def decided_dataset(
    runtime: Runtime, aclient: httpx.AsyncClient, upstream: UpstreamMock, key: str, agent: str, senior: str
) -> dict[str, str]:
    """Six decisions, a minute apart, as an export sees them; their review ids by what they show:
    `edit` (tagged wrong-facts), `approve`, `override` (a senior's, tagged policy), `near_duplicate` (the
    first question again in other case and spacing, edited later, untagged), `case_only` (an edit that only
    changes case) and `tool_call` (a senior edits a held refund's amount)."""
    clock = runtime.clock
    unsure = {"logprob": -0.2}
    found: dict[str, str] = {}

    async def decided(name: str, question: str, answer: dict[str, Any], who: str, action: Action, **how: Any) -> None:
        found[name] = await held_review(aclient, upstream, key, question, answer, **how.pop("extra", {}))
        await decide_as(runtime, who, found[name], action, **how)
        assert isinstance(clock, ManualClock)
        clock.advance(60)

    await decided("edit", "Capital of France?", completion_body("Lyon.", **unsure), agent, Action.EDIT,
                  text="Paris.", tags=["wrong-facts"], comment="wrong city")  # fmt: skip
    await decided("approve", "Is my refund on its way?", completion_body("Yes, it shipped today.", **unsure),
                  agent, Action.APPROVE)  # fmt: skip
    await decided("override", "Cancel my order", completion_body("I cannot help with that.", **unsure), senior,
                  Action.OVERRIDE, text="Use the cancel link in your order email.", tags=["policy"])  # fmt: skip
    await decided("near_duplicate", "capital of  FRANCE", completion_body("Lyon", **unsure), agent, Action.EDIT,
                  text="Paris, of course.")  # fmt: skip
    await decided("case_only", "Opening hours?", completion_body("We open at 9.", **unsure), agent, Action.EDIT,
                  text="we open at 9.")  # fmt: skip
    refund = completion_body(
        "Refunding now.", tool_calls=[tool_call("issue_refund", {"order_id": "42", "amount": 500}, "call_a")]
    )
    await decided("tool_call", "Refund order 42", refund, senior, Action.EDIT,
                  arguments={"call_a": '{"order_id": "42", "amount": 50}'},
                  extra={"tools": REFUND_TOOLS, "metadata": {"stakes": "high"}})  # fmt: skip
    return found


def claimed_by(database_url: str, review_id: str, username: str, seconds: float = 90) -> None:
    """Another agent has the review open: its claim, as opening the page would write it."""
    with sync_session(database_url) as session:
        agent = session.exec(select(Agent).where(Agent.username == username)).one()
        review = session.get(Review, review_id)
        assert review is not None
        review.claimed_by, review.claim_expires_at = agent.id, datetime.now(UTC) + timedelta(seconds=seconds)
        session.add(review)
        session.commit()


def key_named(session: Session, name: str) -> int:
    """A client API key for seeded history (its hash is its name: it is never used to call), its id."""
    key = ApiKey(name=name, prefix=name[:11], key_hash=name)
    session.add(key)
    session.flush()
    assert key.id is not None
    return key.id


def add_in_order(session: Session, rows: list[Any]) -> None:
    """Seeded rows, parents first (the models are not linked by relationships, so the session cannot order them)."""
    for kind in (Exchange, Review, ReviewEvent, Decision):
        session.add_all([row for row in rows if isinstance(row, kind)])
        session.flush()
    session.commit()


# A week of history whose insights are known (tests/api/test_insights.py says each figure).
WEEK_DAY = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday; the history is that week's
WEEK = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-09T00:00:00Z"}


def _seeded_exchange(key: int, at: datetime, route: Route, status: ExchangeStatus, **extra: Any) -> Exchange:
    fields: dict[str, Any] = {"tier": None, "upstream_ms": 100.0, "model": "support-bot"} | extra
    return Exchange(request_id="req", api_key_id=key, upstream_model="m", request={}, response={}, signals={},
                    policy_version="p", route=route, status=status, created_at=at, **fields)  # fmt: skip


def seed_week(database_url: str) -> None:
    """The week: 10 exchanges of the `web` key, 2 of the `mobile` key, and one of the week before.

    web: 4 released (upstream 100, 200, 300, 400 ms; one drawn for audit), 5 held in `agent` and 1 failed
    (timeout). Of the held: approved after 10 s and edited after 20 s (both in their client's wait), overridden
    after 100 s (past it: the client got the placeholder), escalated after 30 s and still open, and one open
    since 2 h before the summary. mobile: 1 held in `senior`, approved after 60 s; 1 failed (http_error).
    """
    make_agent(database_url, "ada")
    with sync_session(database_url) as session:
        web, mobile = key_named(session, "web"), key_named(session, "mobile")
        (agent,) = session.exec(select(Agent)).all()
        rows: list[Any] = []
        for number, ms in enumerate((100.0, 200.0, 300.0, 400.0)):
            at = WEEK_DAY + timedelta(minutes=number)
            exchange = _seeded_exchange(web, at, Route.RELEASE, ExchangeStatus.RELEASED, upstream_ms=ms)
            rows.append(exchange)
            if number == 0:
                rows.append(Review(exchange_id=exchange.id, api_key_id=web, tier="agent", kind=ReviewKind.AUDIT,
                                   created_at=exchange.created_at, deadline_at=exchange.created_at))  # fmt: skip
        rows.append(_seeded_exchange(web, WEEK_DAY, Route.NONE, ExchangeStatus.FAILED, error_kind="timeout"))
        held = [  # (seconds to the decision, the action, the client's wait in seconds, its deadline outcome)
            (10, Action.APPROVE, 20, None),
            (20, Action.EDIT, 20, None),
            (100, Action.OVERRIDE, 20, DeadlineOutcome.PLACEHOLDER),
            (30, Action.ESCALATE, 20, DeadlineOutcome.PLACEHOLDER),
        ]
        for number, (seconds, action, wait, outcome) in enumerate(held):
            at = WEEK_DAY + timedelta(hours=1, minutes=number)
            closes = action != Action.ESCALATE
            status = {Action.APPROVE: ExchangeStatus.APPROVED, Action.EDIT: ExchangeStatus.EDITED,
                      Action.OVERRIDE: ExchangeStatus.OVERRIDDEN}.get(action, ExchangeStatus.HELD)  # fmt: skip
            exchange = _seeded_exchange(web, at, Route.HOLD, status, tier="agent", deadline_outcome=outcome)
            review = Review(exchange_id=exchange.id, api_key_id=web, tier="agent", created_at=at,
                            deadline_at=at + timedelta(seconds=wait),
                            status=ReviewStatus.DECIDED if closes else ReviewStatus.OPEN,
                            decided_at=at + timedelta(seconds=seconds) if closes else None)  # fmt: skip
            decision = Decision(review_id=review.id, agent_id=agent.id, action=action,
                                created_at=at + timedelta(seconds=seconds))  # fmt: skip
            rows += [exchange, review, decision]
        late = _seeded_exchange(web, WEEK_DAY + timedelta(days=2), Route.HOLD, ExchangeStatus.HELD, tier="agent")
        rows += [late, Review(exchange_id=late.id, api_key_id=web, tier="agent", created_at=late.created_at,
                              deadline_at=late.created_at)]  # fmt: skip
        on_tuesday = WEEK_DAY + timedelta(days=1)
        senior = _seeded_exchange(mobile, on_tuesday, Route.HOLD, ExchangeStatus.APPROVED, tier="senior",
                                  model="other-bot")  # fmt: skip
        at = senior.created_at
        review = Review(exchange_id=senior.id, api_key_id=mobile, tier="senior", created_at=at,
                        deadline_at=at + timedelta(seconds=120), status=ReviewStatus.DECIDED,
                        decided_at=at + timedelta(seconds=60))  # fmt: skip
        rows += [senior, review, Decision(review_id=review.id, agent_id=agent.id, action=Action.APPROVE)]
        rows.append(_seeded_exchange(mobile, WEEK_DAY + timedelta(days=1), Route.NONE, ExchangeStatus.FAILED,
                              error_kind="http_error"))  # fmt: skip
        rows.append(
            _seeded_exchange(web, WEEK_DAY - timedelta(days=3), Route.RELEASE, ExchangeStatus.RELEASED)
        )  # last week
        add_in_order(session, rows)


def seed_scores(database_url: str) -> None:
    """Ten scored answers of the week at confidence 0.05, 0.15, ..., 0.95. Labels: 0.35 approved, 0.45
    overridden, 0.55 approved, 0.65 edited, 0.75 and 0.85 approved (held reviews), 0.95 approved in an audit drawn
    at rate 0.5 (so it weighs 2). Each decision came 30 s after its agent's claim for four of them, 60 s for three."""
    agent = make_agent(database_url, "ada")
    labels = {0.35: Action.APPROVE, 0.45: Action.OVERRIDE, 0.55: Action.APPROVE, 0.65: Action.EDIT,
              0.75: Action.APPROVE, 0.85: Action.APPROVE, 0.95: Action.APPROVE}  # fmt: skip
    with sync_session(database_url) as session:
        key = key_named(session, "web")
        rows: list[Any] = []
        for number in range(10):
            confidence = round(0.05 + number / 10, 2)
            at = WEEK_DAY + timedelta(minutes=number)
            exchange = Exchange(request_id="r", api_key_id=key, model="support-bot", upstream_model="m", request={},
                                response={}, signals={}, policy_version="p", route=Route.HOLD, tier="agent",
                                status=ExchangeStatus.HELD, confidence=confidence, created_at=at)  # fmt: skip
            rows.append(exchange)
            if confidence not in labels:
                continue
            audit = confidence == 0.95
            review = Review(exchange_id=exchange.id, api_key_id=key, tier="agent", created_at=at, deadline_at=at,
                            kind=ReviewKind.AUDIT if audit else ReviewKind.HOLD, audit_rate=0.5 if audit else None,
                            status=ReviewStatus.DECIDED, decided_at=at + timedelta(minutes=5))  # fmt: skip
            spent = 30 if len([row for row in rows if isinstance(row, Decision)]) < 4 else 60
            claimed = at + timedelta(minutes=5) - timedelta(seconds=spent)
            rows += [
                review,
                ReviewEvent(review_id=review.id, kind=EventKind.CLAIMED, agent_id=agent.id, at=claimed),
                Decision(
                    review_id=review.id,
                    agent_id=agent.id,
                    action=labels[confidence],
                    created_at=at + timedelta(minutes=5),
                ),  # fmt: skip
            ]
        add_in_order(session, rows)
