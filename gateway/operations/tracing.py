"""Traces: OpenTelemetry spans for the request, the upstream call, scoring, the hold and the decision, with the
GenAI semantic conventions' attributes (`gen_ai.*`, schema 1.44.0, from the pinned
`opentelemetry-semantic-conventions`), and the confidence and the human decision as `gen_ai.evaluation.result`
span events. Exported over OTLP/HTTP when `HITL_TRACING__OTLP_ENDPOINT` is set; without it the API's no-op
tracer costs next to nothing. No span holds a prompt, an answer or a secret: ids, model names, token counts,
confidences and routes only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import Span, SpanKind

from gateway.settings import TracingSettings

TRACER = trace.get_tracer("hitl-gateway", schema_url=Schemas.V1_44_0.value)
EVALUATION = "gen_ai.evaluation.result"
NAME_LIMIT = 200  # characters of a client's model name kept in a span


def configure(settings: TracingSettings) -> Callable[[], None]:
    """Export this process's spans over OTLP/HTTP when an endpoint is set; what flushes and stops the export."""
    if not settings.otlp_endpoint:
        return lambda: None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider.shutdown


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """A span around the block, current within it; an exception leaving the block is recorded on it."""
    given = {key.replace("__", "."): value for key, value in attributes.items() if value is not None}
    with TRACER.start_as_current_span(name, kind=kind, attributes=given) as found:
        yield found


def request(model: str, dialect: str) -> Any:
    """The span of one request the gateway answers, named as the conventions name an inference span."""
    model = model[:NAME_LIMIT]
    return span(
        f"{gen_ai.GenAiOperationNameValues.CHAT.value} {model}",
        SpanKind.SERVER,
        **{gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value},
        **{gen_ai.GEN_AI_REQUEST_MODEL: model, "hitl.dialect": dialect},
    )


def upstream(provider: str, model: str, upstream_name: str) -> Any:
    """The span of the call to the upstream model."""
    return span(
        f"{gen_ai.GenAiOperationNameValues.CHAT.value} {model}",
        SpanKind.CLIENT,
        **{
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
            gen_ai.GEN_AI_PROVIDER_NAME: provider,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            "hitl.upstream": upstream_name,
        },
    )


def answered(found: Span, response: dict[str, Any]) -> None:
    """What the upstream's chat.completion says of itself: its id, model, finish reasons and token usage."""
    usage = response.get("usage") or {}
    reasons = [str(choice.get("finish_reason")) for choice in response.get("choices") or [] if choice]
    values = {
        gen_ai.GEN_AI_RESPONSE_ID: response.get("id"),
        gen_ai.GEN_AI_RESPONSE_MODEL: response.get("model"),
        gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: reasons or None,
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: usage.get("prompt_tokens"),
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: usage.get("completion_tokens"),
    }
    found.set_attributes({key: value for key, value in values.items() if value is not None})


def evaluated(
    found: Span, name: str, value: float | None, label: str, explanation: str = "", response_id: str | None = None
) -> None:
    """A `gen_ai.evaluation.result` event on `found`: the gateway's confidence, or an agent's decision."""
    attributes: dict[str, Any] = {gen_ai.GEN_AI_EVALUATION_NAME: name, gen_ai.GEN_AI_EVALUATION_SCORE_LABEL: label}
    if value is not None:
        attributes[gen_ai.GEN_AI_EVALUATION_SCORE_VALUE] = value
    if explanation:
        attributes[gen_ai.GEN_AI_EVALUATION_EXPLANATION] = explanation
    if response_id:
        attributes[gen_ai.GEN_AI_RESPONSE_ID] = response_id
    found.add_event(EVALUATION, attributes)
