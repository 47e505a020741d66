"""Traces: the request, the upstream call, scoring, the hold and the decision as OpenTelemetry spans with the
GenAI conventions' attributes, the confidence and the decision as `gen_ai.evaluation.result` events, and never
a prompt or an answer in them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.operations import tracing
from gateway.settings import TracingSettings
from tests import factories
from tests.factories import MODEL, console_login

EXPORTED = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans this test's gateway made, from the SDK's in-memory exporter (one provider per test process,
    as OpenTelemetry allows)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTED))
        trace.set_tracer_provider(provider)
    EXPORTED.clear()
    yield EXPORTED
    EXPORTED.clear()


def named(found: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [span for span in found if span.name == name]
    return span


def test_a_held_answer_and_its_decision_are_traced(
    spans: InMemorySpanExporter, client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent
) -> None:
    hitl = factories.held(client, upstream, api_key, text="Lyon is the secret answer.")
    token = console_login(client, *agent)
    client.post(
        f"/console/reviews/{hitl['review_id']}/decide",
        data={"action": "edit", "text": "Paris, the edited answer.", "csrftoken": token},
    )
    found = spans.get_finished_spans()
    request = named(found, f"chat {MODEL}")
    called = named(found, "chat gpt-4o-mini")
    scored = named(found, "hitl.score")
    decided = named(found, "hitl.decision")
    assert request.kind == trace.SpanKind.SERVER and called.kind == trace.SpanKind.CLIENT
    assert called.parent is not None and called.parent.span_id == request.context.span_id
    assert scored.parent is not None and scored.parent.span_id == request.context.span_id
    assert request.attributes is not None and called.attributes is not None
    assert request.attributes["gen_ai.operation.name"] == "chat" and request.attributes["gen_ai.request.model"] == MODEL
    assert request.attributes["hitl.exchange_id"] == hitl["exchange_id"]
    assert request.attributes["hitl.review_id"] == hitl["review_id"] and request.attributes["hitl.status"] == "held"
    assert called.attributes["gen_ai.provider.name"] == "openai"
    assert called.attributes["gen_ai.usage.output_tokens"] > 0 and called.attributes["gen_ai.response.id"]
    [confidence] = scored.events
    assert confidence.name == "gen_ai.evaluation.result" and confidence.attributes is not None
    assert confidence.attributes["gen_ai.evaluation.name"] == "hitl.confidence"
    assert confidence.attributes["gen_ai.evaluation.score.label"] == "hold"
    assert confidence.attributes["gen_ai.evaluation.score.value"] == pytest.approx(hitl["confidence"])
    [review] = decided.events
    assert review.attributes is not None and review.attributes["gen_ai.evaluation.name"] == "hitl.human_review"
    assert review.attributes["gen_ai.evaluation.score.label"] == "edit"
    assert review.attributes["gen_ai.evaluation.score.value"] == 0.0
    assert review.attributes["gen_ai.response.id"] == hitl["exchange_id"]  # ties the decision to the request
    every = repr([(span.attributes, [event.attributes for event in span.events]) for span in found])
    assert "secret" not in every and "edited" not in every and "Capital" not in every  # no prompt, no answer


def test_a_waiting_client_s_hold_is_a_span(
    spans: InMemorySpanExporter, client: TestClient, upstream: factories.UpstreamMock, api_key: str
) -> None:
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0.2}}
    client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    held = named(spans.get_finished_spans(), "hitl.hold")
    assert held.attributes is not None and held.attributes["hitl.tier"] == "agent"
    assert held.attributes["hitl.decided"] is False  # its wait ran out


def test_an_upstream_failure_is_an_error_span(
    spans: InMemorySpanExporter, client: TestClient, upstream: factories.UpstreamMock, api_key: str
) -> None:
    upstream.answer({"error": {"message": "boom"}}, status=500)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
    assert (
        client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}).status_code
        >= 500
    )
    called = named(spans.get_finished_spans(), "chat gpt-4o-mini")
    assert called.status.status_code == trace.StatusCode.ERROR


def test_a_served_gateway_exports_its_spans_over_otlp(database_url: str, unsure_upstream: str, tmp_path: Path) -> None:
    """A real `hitl serve` with an OTLP endpoint: its spans reach the collector, flushed when it stops."""
    received: list[bytes] = []
    collector = FastAPI()

    @collector.post("/v1/traces")
    async def traces(request: Request) -> Response:
        received.append(await request.body())
        return Response(status_code=200)

    key = factories.make_api_key(database_url)
    with factories.serving(collector) as endpoint:
        env = factories.gateway_env(database_url, unsure_upstream, HITL_TRACING__OTLP_ENDPOINT=endpoint)
        gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log")
        try:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0}}
            answered = httpx.post(
                f"{gateway.base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert answered.status_code == 200
        finally:
            gateway.stop()  # its lifespan flushes the batch on the way out
    names = set()
    for payload in received:
        request = ExportTraceServiceRequest()
        request.ParseFromString(payload)
        names |= {
            span.name for spans in request.resource_spans for scoped in spans.scope_spans for span in scoped.spans
        }
    assert {f"chat {MODEL}", "chat gpt-4o-mini", "hitl.score"} <= names, names


def test_without_an_endpoint_no_provider_is_installed() -> None:
    before = trace.get_tracer_provider()
    tracing.configure(TracingSettings())()
    assert trace.get_tracer_provider() is before
