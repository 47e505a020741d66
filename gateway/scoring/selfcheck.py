"""The self-check signal: a judge model is asked whether the candidate answer is right.

With logprobs, P("yes") is read from the judge's first token: the probabilities of every case and
spacing variant of yes and of no in its top_logprobs are summed, and P(yes) = yes / (yes + no).
Without logprobs (the judge's provider has none), the judge is asked for a verbalized 0-100 number
instead. A reply that yields neither is recorded as missing, never as a number.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from gateway.conversation.upstream import Upstreams
from gateway.errors import GatewayError
from gateway.prompt_templates import Prompts
from gateway.settings import SelfCheckSettings

JUDGE_TOP_LOGPROBS = 10
_WORD = re.compile(r"[^a-z]")
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%?")
YES = {"yes", "y", "true", "correct"}
NO = {"no", "n", "false", "incorrect"}


@dataclass(frozen=True)
class SelfCheck:
    p_yes: float | None
    method: str  # "logprobs", "verbalized" or "none"
    template: str | None
    latency_ms: float
    tokens: int
    missing: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normal(token: str) -> str:
    return _WORD.sub("", token.strip().lower())


def p_yes_from_logprobs(first_token: dict[str, Any] | None) -> float | None:
    """P(yes) from a judge's first token, or None when neither yes nor no is among its alternatives."""
    if not first_token:
        return None
    alternatives = first_token.get("top_logprobs") or [first_token]
    yes = no = 0.0
    for alternative in alternatives:
        word = _normal(str(alternative.get("token", "")))
        probability = math.exp(max(float(alternative["logprob"]), -100.0))
        if word in YES:
            yes += probability
        elif word in NO:
            no += probability
    if yes + no == 0.0:
        return None
    return yes / (yes + no)


def parse_verbalized(text: str | None) -> float | None:
    """The first number in 0..100 in a reply, as a probability; None when there is none."""
    if not text:
        return None
    found = _NUMBER.search(text)
    if found is None:
        return None
    value = float(found.group(1))
    return value / 100.0 if 0.0 <= value <= 100.0 else None


class Judge:
    """Asks a judge model a yes/no question: P(yes) from its first token, or a verbalized 0-100 number.

    `templates` names the yes/no template and its verbalized twin in `prompts/`.
    """

    def __init__(self, prompts: Prompts, upstreams: Upstreams) -> None:
        self.prompts = prompts
        self.upstreams = upstreams

    async def verdict(self, model: str, templates: tuple[str, str], **values: str) -> SelfCheck:
        started = time.perf_counter()
        judge = self.upstreams.get(model)
        tokens = 0
        try:
            if judge.logprobs:
                template = self.prompts.get(templates[0])
                reply = await judge.complete(_body(template.render(**values), 1, True))
                tokens += tokens_used(reply)
                choice = reply["choices"][0]
                content = (choice.get("logprobs") or {}).get("content") or []
                if content:
                    value = p_yes_from_logprobs(content[0])
                    return _result(value, "logprobs", "no_yes_no_token", template.version, started, tokens)
            template = self.prompts.get(templates[1])
            reply = await judge.complete(_body(template.render(**values), 8, False))
            tokens += tokens_used(reply)
            value = parse_verbalized((reply["choices"][0].get("message") or {}).get("content"))
            return _result(value, "verbalized", "unparseable", template.version, started, tokens)
        except GatewayError as exc:
            # A failed judge must not fail the client's request: the answer is routed without it.
            return SelfCheck(None, "none", None, elapsed_ms(started), tokens, f"error:{exc.code or exc.type}")


class SelfChecker:
    def __init__(self, settings: SelfCheckSettings, judge: Judge) -> None:
        self.settings = settings
        self.judge = judge

    def wanted(self, logprob_confidence: float | None) -> bool:
        mode = self.settings.mode
        if mode == "never":
            return False
        if mode == "always" or logprob_confidence is None:
            return True
        return self.settings.grey_low <= logprob_confidence <= self.settings.grey_high

    async def run(self, model: str, question: str, answer: str) -> SelfCheck:
        found = await self.judge.verdict(
            self.settings.judge or model, ("selfcheck", "selfcheck_verbal"), question=question, answer=answer
        )
        return found if found.missing is None else replace(found, missing=f"selfcheck:{found.missing}")


def _body(prompt: str, max_tokens: int, logprobs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if logprobs:
        body.update(logprobs=True, top_logprobs=JUDGE_TOP_LOGPROBS)
    return body


def _result(
    value: float | None, method: str, why_missing: str, template: str, started: float, tokens: int
) -> SelfCheck:
    """A found value with its method, or the reason it is missing: never a made-up number."""
    if value is None:
        return SelfCheck(None, "none", template, elapsed_ms(started), tokens, why_missing)
    return SelfCheck(value, method, template, elapsed_ms(started), tokens)


def tokens_used(reply: dict[str, Any]) -> int:
    """Total tokens a chat.completion says it used (0 when it does not say)."""
    return int((reply.get("usage") or {}).get("total_tokens") or 0)


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading)."""
    return (time.perf_counter() - started) * 1000
