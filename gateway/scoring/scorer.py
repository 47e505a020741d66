"""Scoring on the request path: logprob signals, then the self-check and consistency calls when they
are wanted, then the calibrator the policy names (or the documented default formula)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.conversation import toolcalls
from gateway.conversation.chat import question_of
from gateway.conversation.upstream import Upstream
from gateway.scoring.calibrator import UNCALIBRATED, Calibrators, calibration_group
from gateway.scoring.confidence import Score, calibrated, score_choices, with_consistency, with_selfcheck
from gateway.scoring.consistency import ConsistencyChecker
from gateway.scoring.selfcheck import SelfChecker
from gateway.settings import Settings

DEFAULT_CALIBRATOR = "default"


@dataclass
class Scorer:
    settings: Settings
    selfcheck: SelfChecker
    consistency: ConsistencyChecker

    async def score(
        self,
        upstream: Upstream,
        model: str,
        body: dict[str, Any],
        response: dict[str, Any],
        candidate: str,
        calls: Sequence[toolcalls.ToolCall] = (),
        calibrators: Calibrators = UNCALIBRATED,
    ) -> Score:
        """`calls` are the candidate's tool calls, as the relay parsed them for the policy; `calibrators` are the
        ones the policy in force names."""
        score = score_choices(response["choices"])
        decided_by = ["logprobs"] if score.confidence is not None else []
        if self.selfcheck.wanted(score.confidence) or self.consistency.enabled:
            question = question_of(body.get("messages"))
            # A tool call is judged by what it would do, with the tool's description; text as it reads.
            judged = toolcalls.judged(calls, body) if calls else candidate
            if self.selfcheck.wanted(score.confidence):
                check = await self.selfcheck.run(model, question, judged)
                score = with_selfcheck(score, check, self.settings.selfcheck.weight)
                decided_by += ["selfcheck"] if check.p_yes is not None else []
            if self.consistency.enabled:
                found = await self.consistency.run(upstream, body, question, candidate)
                score = with_consistency(score, found, self.settings.consistency.weight)
                decided_by += ["consistency"] if found.score is not None else []
        score.signals["decided_by"] = "+".join(decided_by) or "none"  # which signals made the confidence
        group = calibration_group(model, score.signals)
        score.signals["calibration_group"] = group
        active = calibrators.for_group(group)
        score.signals["calibrated_on"] = group if group in calibrators.groups else "pooled"
        if active is None:
            return calibrated(score, None, DEFAULT_CALIBRATOR)
        return calibrated(score, active.calibrator, active.version)

    def piece(self, model: str, tokens: list[dict[str, Any]], calibrators: Calibrators) -> tuple[float | None, str]:
        """A streamed chunk's own confidence and its calibration group: from its tokens' logprobs alone (the chunk
        goes out now or not at all; no judge waits for it), calibrated as a whole answer of its group would be."""
        score = score_choices([{"message": {"content": "chunk"}, "logprobs": {"content": tokens}}])
        score.signals["decided_by"] = "logprobs" if score.confidence is not None else "none"
        group = calibration_group(model, score.signals)
        active = calibrators.for_group(group)
        if active is None:
            return calibrated(score, None, DEFAULT_CALIBRATOR).confidence, group
        return calibrated(score, active.calibrator, active.version).confidence, group
