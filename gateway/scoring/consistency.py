"""The consistency signal, in the SelfCheckGPT spirit: a model that knows the answer says it again.

The answering model is asked `k` more times (at a sampling temperature), and the judge says, for each
sample, whether it agrees with the candidate (same yes/no reading as the self-check: first-token P(yes),
or a verbalized 0-100 number). The signal is the mean agreement over the samples the judge could read.

It is off by default (`HITL_CONSISTENCY__SAMPLES=0`) because it is the costliest signal: `k` extra
answers of the request's length and `k` one-token judge calls per scored exchange.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.conversation.upstream import Upstream
from gateway.errors import GatewayError
from gateway.scoring.selfcheck import Judge, SelfCheck, elapsed_ms, tokens_used
from gateway.settings import ConsistencySettings

TEMPLATES = ("consistency", "consistency_verbal")


@dataclass(frozen=True)
class Consistency:
    score: float | None
    samples: int
    agreements: list[float | None] = field(default_factory=list)
    template: str | None = None
    latency_ms: float = 0.0
    tokens: int = 0
    missing: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConsistencyChecker:
    def __init__(self, settings: ConsistencySettings, judge_model: str | None, judge: Judge) -> None:
        self.settings = settings
        self.judge_model = judge_model
        self.judge = judge

    @property
    def enabled(self) -> bool:
        return self.settings.samples > 0

    async def run(self, upstream: Upstream, body: dict[str, Any], question: str, candidate: str) -> Consistency:
        started = time.perf_counter()
        sample_body = {
            key: value
            for key, value in body.items()
            if key not in ("logprobs", "top_logprobs", "n", "stream", "stream_options")
        }
        sample_body["temperature"] = self.settings.temperature
        replies = await asyncio.gather(
            *(self._sample(upstream, sample_body) for _ in range(self.settings.samples)),
        )
        tokens = sum(used for _, used in replies)
        texts = [text for text, _ in replies if text is not None]
        if not texts:
            return Consistency(None, 0, tokens=tokens, latency_ms=elapsed_ms(started), missing="consistency:no_samples")
        verdicts: list[SelfCheck] = await asyncio.gather(
            *(
                self.judge.verdict(
                    self.judge_model or upstream.name, TEMPLATES, question=question, answer=candidate, sample=text
                )
                for text in texts
            )
        )
        tokens += sum(verdict.tokens for verdict in verdicts)
        agreements = [verdict.p_yes for verdict in verdicts]
        read = [value for value in agreements if value is not None]
        template = next((verdict.template for verdict in verdicts if verdict.template), None)
        score = sum(read) / len(read) if read else None
        return Consistency(
            score=score,
            samples=len(texts),
            agreements=agreements,
            template=template,
            latency_ms=elapsed_ms(started),
            tokens=tokens,
            missing=None if read else "consistency:no_verdict",
        )

    @staticmethod
    async def _sample(upstream: Upstream, body: dict[str, Any]) -> tuple[str | None, int]:
        try:
            reply = await upstream.complete(body)
        except GatewayError:
            return None, 0  # a lost sample makes the signal noisier, never the request fail
        message = reply["choices"][0].get("message") or {}
        return str(message.get("content") or ""), tokens_used(reply)
