"""Policy: versioned rules that map a confidence and the request to a route.

A policy is a YAML file (see `default_policy.yaml`). Rules are checked first, in order; a rule's paths
look into the request (`metadata.stakes`) or into the candidate's tool calls (`response.tool_calls.name`,
`response.tool_calls.arguments.amount`: true when one call meets every such condition), with equality, a
list of values, or a comparison (`{gt: 100}`, `{lte: 5}`, `{matches: "regex"}`). An answer with tool
calls that matches no rule takes the `tool_calls` outcome when the policy has one and the calls are actions
(malformed arguments: `unscored`); a structured output asked as a forced tool call, and every answer when the
policy has no `tool_calls` outcome, takes the first band whose `min` the confidence reaches (for tool calls,
the self-check's verdict on them); an answer without a confidence takes `unscored`.
A file that does not parse or does not validate raises `PolicyError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.conversation.toolcalls import MALFORMED, ToolCall, structured_output
from gateway.models import DeadlineOutcome, Route

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")

Scalar = str | int | float | bool


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcome(_Strict):
    route: Route
    tier: str | None = None

    @model_validator(mode="after")
    def _tier_matches_route(self) -> Outcome:
        _check_tier(self.route, self.tier)
        return self


def _check_tier(route: Route, tier: str | None) -> None:
    if route == Route.HOLD and not tier:
        raise ValueError("a `hold` needs a `tier`")
    if route == Route.RELEASE and tier:
        raise ValueError("a `release` takes no `tier`")


# A comparison's numeric bounds: how each reads in a routing reason, and the test it makes.
_BOUNDS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gt": (">", operator.gt),
    "gte": (">=", operator.ge),
    "lt": ("<", operator.lt),
    "lte": ("<=", operator.le),
}


class Compare(_Strict):
    """A comparison in a rule: every bound given must hold."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    matches: str | None = Field(None, description="A regular expression the value must contain a match of.")

    def _bounds(self) -> list[tuple[str, float]]:
        """The numeric bounds given, as (name, bound)."""
        given = ((name, getattr(self, name)) for name in _BOUNDS)
        return [(name, bound) for name, bound in given if bound is not None]

    @model_validator(mode="after")
    def _says_something(self) -> Compare:
        if not self._bounds() and self.matches is None:
            raise ValueError("a comparison needs one of gt, gte, lt, lte, matches")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"`matches` is not a regular expression: {exc}") from None
        return self

    def holds(self, actual: Any) -> bool:
        if self.matches is not None and not (isinstance(actual, str) and re.search(self.matches, actual)):
            return False
        bounds = self._bounds()
        if not bounds:
            return True
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        return all(_BOUNDS[name][1](actual, bound) for name, bound in bounds)

    def __str__(self) -> str:
        parts = [f"{_BOUNDS[name][0]} {bound:g}" for name, bound in self._bounds()]
        if self.matches is not None:
            parts.append(f"matches {self.matches!r}")
        return " and ".join(parts)


def _kind(value: Any) -> str:
    return "compare" if isinstance(value, dict | Compare) else "values" if isinstance(value, list) else "value"


# A mapping is a comparison and nothing else, so a bad one is reported as a bad comparison.
Expected = Annotated[
    Annotated[Scalar, Tag("value")] | Annotated[list[Scalar], Tag("values")] | Annotated[Compare, Tag("compare")],
    Discriminator(_kind),
]
_TAGS = {"value", "values", "compare"}
TOOL_CALLS = "response.tool_calls."


class Band(Outcome):
    min: float = Field(ge=0.0, le=1.0)


Stream = Literal["buffered", "progressive"]


class Rule(_Strict):
    """A rule either routes what it matches (`route`, with a `tier` for a hold) or only chooses how a streamed
    answer to the requests it matches flows (`stream`), the bands then routing it."""

    name: str
    when: dict[str, Expected] = Field(min_length=1)
    route: Route | None = None
    tier: str | None = None
    stream: Stream | None = Field(
        None, description="How a streamed answer to a matching request flows (a rule with `stream` routes nothing)."
    )

    @field_validator("when")
    @classmethod
    def _known_paths(cls, when: dict[str, Expected]) -> dict[str, Expected]:
        for path in when:
            if path.startswith("response.") and not path.startswith(TOOL_CALLS):
                raise ValueError(f"{path!r}: rules look into the answer only through `response.tool_calls.`")
        return when

    @model_validator(mode="after")
    def _routes_or_streams(self) -> Rule:
        if self.stream is None:
            if self.route is None:
                raise ValueError("a rule needs a `route` (what it decides) or a `stream` (how a stream flows)")
            _check_tier(self.route, self.tier)
            return self
        if self.route is not None or self.tier is not None:
            raise ValueError("a rule either routes (`route`, `tier`) or chooses how a stream flows (`stream`), not "
                             "both: an answer a rule routes is always buffered")  # fmt: skip
        if any(path.startswith(TOOL_CALLS) for path in self.when):
            raise ValueError("a `stream` rule looks at the request only: the answer is unknown when it starts to flow")
        return self

    @cached_property
    def _split(self) -> tuple[dict[str, Expected], dict[str, Expected]]:
        """The conditions on the request, and those on one tool call (paths relative to the call)."""
        on_request = {path: value for path, value in self.when.items() if not path.startswith(TOOL_CALLS)}
        on_calls = {
            path.removeprefix(TOOL_CALLS): value for path, value in self.when.items() if path.startswith(TOOL_CALLS)
        }
        return on_request, on_calls

    def matches(self, request: dict[str, Any], calls: Sequence[dict[str, Any]]) -> bool:
        on_request, on_calls = self._split
        if not all(_matches(expected, _lookup(request, path)) for path, expected in on_request.items()):
            return False
        return not on_calls or any(
            all(_matches(expected, _lookup(call, path)) for path, expected in on_calls.items()) for call in calls
        )

    def facts(self) -> str:
        return ", ".join(
            f"{path} {expected}" if isinstance(expected, Compare) else f"{path} = {expected!r}"
            for path, expected in self.when.items()
        )


NO_LOGPROBS = "no-logprobs"  # the calibration group of answers scored without the model's logprobs, any model


class Calibrated(_Strict):
    """One calibration group's own calibrator, and its own bands (absent: the policy's bands)."""

    calibrator: int = Field(description="Id of a stored calibrator (`hitl calibrate`) fitted on this group.")
    bands: list[Band] | None = Field(None, min_length=1)


class Reuse(_Strict):
    """Serve an agent's approved answer again, instead of holding a fresh candidate that is not confident on its
    own, for a later request with the same normalized conversation, model, tools and structured-output schema."""

    share: list[list[str]] = Field(
        default_factory=list,
        description="Groups of API key names that share their approved answers (default: each key its own).",
    )


class Notify(_Strict):
    """Where a tier's notifications go: a Slack-compatible incoming webhook and/or e-mail addresses."""

    webhook: str | None = Field(None, description="An incoming webhook URL (Slack, Mattermost, Teams' Slack shape).")
    email: list[str] = Field(default_factory=list, description="Addresses (sent through HITL_NOTIFY__SMTP_HOST).")
    sla: bool = Field(True, description="A message when one of the tier's reviews waits past its `sla`.")
    digest: bool = Field(True, description="A daily digest: counts, the oldest waiting, a link to the queue.")
    deadline: float | None = Field(
        None,
        gt=0,
        description="Seconds before a waiting client's deadline to say that its review is about to run out (none: "
        "no warning); `hitl serve` looks every second.",
    )

    @field_validator("webhook")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"https?://[^\s]+$", url):
            raise ValueError("a webhook is an http:// or https:// URL")
        return url

    @field_validator("email")
    @classmethod
    def _addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            if not re.match(r"[^@\s]+@[^@\s]+$", address):
                raise ValueError(f"{address[:80]!r} is not an e-mail address")
        return addresses


class PolicyFile(_Strict):
    version: str | None = None
    calibrator: int | None = Field(
        None, description="Id of a stored calibrator (`hitl calibrate`); the bands then apply to its output."
    )
    models: dict[str, Calibrated] = Field(
        default_factory=dict,
        description="Per calibration group (a model's answers scored with its logprobs, or `no-logprobs` for every"
        " answer scored without), its own calibrator and bands; a group not named here takes `calibrator` and"
        " `bands`.",
    )
    tiers: list[str] = Field(min_length=1)
    bands: list[Band] = Field(min_length=1)
    unscored: Outcome
    tool_calls: Outcome | None = Field(
        None,
        description="Outcome for an answer whose tool calls (actions, not a structured output) no rule matched"
        " (absent: routed by confidence, the self-check judging the calls).",
    )
    rules: list[Rule] = Field(default_factory=list)
    reuse: Reuse | None = Field(
        None, description="Serve approved answers again (absent: never). A held answer a rule names is never reused."
    )
    on_deadline: dict[str, DeadlineOutcome] = Field(
        default_factory=dict,
        description="Per tier, what a client gets when its wait runs out (default: `refusal` for requests with "
        "`tools` or `response_format`, else `placeholder`).",
    )
    sla: dict[str, float] = Field(
        default_factory=dict,
        description="Per tier, the seconds a review should wait at most; the queue colours a review as it nears "
        "and passes its tier's target (no target: no colour).",
    )
    notify: dict[str, Notify] = Field(
        default_factory=dict,
        description="Per tier, where its notifications go (`hitl notify`): reviews past the tier's `sla`, and a "
        "daily digest.",
    )
    stream: Stream = Field(
        "buffered",
        description="How a streamed text answer reaches its client: `buffered`, whole once it is decided, or "
        "`progressive`, chunk by chunk while each chunk's own confidence clears the release band (the first that "
        "does not stops the flow, and the rest is held). A rule with `stream` chooses for the requests it matches."
        " Tool calls, structured outputs and answers a rule routes are always buffered.",
    )
    stream_chunk: Literal["sentence"] | int = Field(
        "sentence", description="What a progressive chunk is: a `sentence`, or a number of tokens (at least 1)."
    )

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, tiers: list[str]) -> list[str]:
        if len(set(tiers)) != len(tiers):
            raise ValueError("tiers must be unique")
        return tiers

    def problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Checks across fields, each with the path of the value at fault (so the error names its line)."""
        found = _band_problems(("bands",), self.bands)
        own_bands = [(name, group.bands) for name, group in self.models.items() if group.bands]
        for name, bands in own_bands:
            found += _band_problems(("models", name, "bands"), bands)
        outcomes: list[tuple[tuple[int | str, ...], Outcome | Rule]] = [
            *((("bands", i), band) for i, band in enumerate(self.bands)),
            *((("models", name, "bands", i), band) for name, bands in own_bands for i, band in enumerate(bands)),
            (("unscored",), self.unscored),
            *([(("tool_calls",), self.tool_calls)] if self.tool_calls else []),
            *((("rules", i), rule) for i, rule in enumerate(self.rules)),
        ]
        for loc, outcome in outcomes:
            if outcome.tier and outcome.tier not in self.tiers:
                found.append(((*loc, "tier"), f"tier {outcome.tier!r} is not in tiers {self.tiers}"))
        for tier in self.on_deadline:
            if tier not in self.tiers:
                found.append((("on_deadline", tier), f"tier {tier!r} is not in tiers {self.tiers}"))
        for tier, notify in self.notify.items():
            if tier not in self.tiers:
                found.append((("notify", tier), f"tier {tier!r} is not in tiers {self.tiers}"))
            elif notify.webhook is None and not notify.email:
                found.append((("notify", tier), "a tier's notify needs a `webhook` or an `email`"))
        if isinstance(self.stream_chunk, int) and self.stream_chunk < 1:
            found.append((("stream_chunk",), "a chunk is at least 1 token"))
        for tier, seconds in self.sla.items():
            if tier not in self.tiers:
                found.append((("sla", tier), f"tier {tier!r} is not in tiers {self.tiers}"))
            elif seconds <= 0:
                found.append((("sla", tier), "an SLA target is a number of seconds above 0"))
        return found


def _band_problems(loc: tuple[int | str, ...], bands: Sequence[Band]) -> list[tuple[tuple[int | str, ...], str]]:
    """Bands listed from the highest `min` down, the last at 0.0."""
    found: list[tuple[tuple[int | str, ...], str]] = []
    mins = [band.min for band in bands]
    for index in range(1, len(mins)):
        if mins[index] >= mins[index - 1]:
            found.append(((*loc, index, "min"), "bands must be listed from the highest `min` down, each `min` once"))
    if mins[-1] != 0.0:
        found.append(
            ((*loc, len(mins) - 1, "min"), "the last band must have `min: 0.0` so every confidence finds a band")
        )
    return found


@dataclass(frozen=True)
class Routing:
    route: Route
    tier: str | None
    reason: str
    rule: str | None = None  # the rule that decided, if one did


def _lookup(body: Any, dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(expected: Expected, actual: Any) -> bool:
    if actual is None:
        return False
    if isinstance(expected, Compare):
        return expected.holds(actual)
    if isinstance(expected, list):
        return actual in expected
    return bool(actual == expected)


class Policy:
    def __init__(self, spec: PolicyFile, version: str) -> None:
        self.spec = spec
        self.version = version

    @property
    def tiers(self) -> list[str]:
        return self.spec.tiers

    @property
    def calibrator(self) -> int | None:
        """The pooled calibrator: for every calibration group the policy does not name."""
        return self.spec.calibrator

    def calibrator_for(self, group: str) -> int | None:
        """The stored calibrator that scores answers of calibration `group`."""
        own = self.spec.models.get(group)
        return own.calibrator if own is not None else self.spec.calibrator

    @property
    def calibrators(self) -> set[int]:
        """Every stored calibrator the policy names."""
        named = {group.calibrator for group in self.spec.models.values()}
        return named | ({self.spec.calibrator} if self.spec.calibrator is not None else set())

    def bands_for(self, group: str | None) -> list[Band]:
        own = self.spec.models.get(group) if group is not None else None
        return own.bands if own is not None and own.bands else self.spec.bands

    def sla(self, tier: str) -> float | None:
        """The seconds a review of `tier` should wait at most, if the policy sets a target."""
        return self.spec.sla.get(tier)

    def on_deadline(self, tier: str, request: dict[str, Any]) -> DeadlineOutcome:
        """What a client held in `tier` gets when its wait runs out: the tier's setting, else a refusal for
        requests that expect structure (tools, response_format; a placeholder text would break parsing),
        else the placeholder."""
        if tier in self.spec.on_deadline:
            return self.spec.on_deadline[tier]
        if request.get("tools") or request.get("response_format"):
            return DeadlineOutcome.REFUSAL
        return DeadlineOutcome.PLACEHOLDER

    def progressive(self, request: dict[str, Any]) -> bool:
        """Whether a streamed answer to `request` may be released chunk by chunk: the first `stream` rule that
        matches it says so, or else the policy; never for a structured output or an answer a rule routes whole."""
        shaped = (request.get("response_format") or {}).get("type", "text") != "text"  # JSON is never sent in part
        if structured_output(request) or shaped or request.get("n", 1) != 1:
            return False
        matched = [rule for rule in self.spec.rules if rule.matches(request, [])]
        if any(rule.route is not None for rule in matched):
            return False
        chosen = next((rule.stream for rule in matched if rule.stream is not None), self.spec.stream)
        return chosen == "progressive"

    def releases(self, confidence: float | None, group: str | None) -> bool:
        """Whether its calibration group's bands release an answer this sure (an unscored one: never)."""
        if confidence is None:
            return False
        band = next(band for band in self.bands_for(group) if confidence >= band.min)
        return band.route == Route.RELEASE

    def route(
        self,
        confidence: float | None,
        request: dict[str, Any],
        missing: list[str],
        calls: Sequence[ToolCall] = (),
        group: str | None = None,
    ) -> Routing:
        """`group` is the answer's calibration group: its bands, when the policy gives it its own, route it."""
        facts = [call.as_facts() for call in calls]
        for rule in self.spec.rules:
            if rule.route is not None and rule.matches(request, facts):
                return Routing(rule.route, rule.tier, f"rule {rule.name!r} matched ({rule.facts()})", rule.name)
        if calls:
            names = ", ".join(sorted({call.name for call in calls}))
            if any(call.malformed for call in calls):
                return Routing(self.spec.unscored.route, self.spec.unscored.tier, f"unscored ({MALFORMED}: {names})")
            outcome = self.spec.tool_calls
            if outcome is not None and not structured_output(request):
                # An action the operator chose an outcome for; a structured answer is routed like text, below.
                target = outcome.tier or "release"
                return Routing(outcome.route, outcome.tier, f"tool calls ({names}) matched no rule -> {target}")
        if confidence is None:
            why = ", ".join(missing) or "no signal"
            return Routing(self.spec.unscored.route, self.spec.unscored.tier, f"unscored ({why})")
        upper = 1.0
        for band in self.bands_for(group):
            if confidence >= band.min:
                target = band.tier or "release"
                closing = "]" if upper == 1.0 else ")"
                reason = f"confidence {confidence:.3f} in [{band.min:g}, {upper:g}{closing} -> {target}"
                return Routing(band.route, band.tier, reason)
            upper = band.min
        raise AssertionError("the validator guarantees a band with min 0.0")


def _line_of(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest YAML node on the path `loc`."""
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
            if child is None:
                child = next((key for key, _ in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _error_at(source: str, root: yaml.Node, loc: tuple[int | str, ...], message: str) -> PolicyError:
    where = ".".join(str(part) for part in loc) or "policy"
    return PolicyError(f"{source} line {_line_of(root, loc)}: {where}: {message}")


def parse(text: str, source: str = "<policy>") -> Policy:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{source}{line}: not valid YAML: {exc.problem or exc}") from None
    if root is None or not isinstance(data, dict):
        raise PolicyError(f"{source} line 1: a policy is a mapping with tiers, bands and unscored")
    try:
        spec = PolicyFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(
            part for part in first["loc"] if part not in _TAGS
        )  # the union's branch names mean nothing to a user
        raise _error_at(source, root, loc, first["msg"].removeprefix("Value error, ")) from None
    for loc, message in spec.problems():
        raise _error_at(source, root, loc, message)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return Policy(spec, f"{spec.version or 'unversioned'}@{digest}")


def load(path: Path | None) -> Policy:
    target = path or DEFAULT_POLICY
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{target}: cannot read the policy file: {exc.strerror}") from None
    return parse(text, str(target))


@dataclass(frozen=True)
class Fit:
    """A stored calibrator and the confidence at which its answers should start to be released."""

    calibrator: int
    release_min: float


def recalibrated(policy: Policy, source_text: str, pooled: Fit, note: str, groups: dict[str, Fit] | None = None) -> str:
    """A new policy version: the same rules and tiers, the bands applied to the pooled calibrator with the
    release band starting at its `release_min` (hold bands at or above it are dropped), and each calibration
    group of `groups` with its own calibrator and the same bands moved to its own `release_min`."""
    data = yaml.safe_load(source_text)
    bands = data["bands"]
    data["bands"] = _moved(bands, pooled.release_min)
    base = (policy.spec.version or "policy").split("+cal-")[0]
    data["version"] = f"{base}+cal-{pooled.calibrator}"
    data["calibrator"] = pooled.calibrator
    if groups:
        data["models"] = {
            name: {"calibrator": fit.calibrator, "bands": _moved(bands, fit.release_min)}
            for name, fit in sorted(groups.items())
        }
    else:
        data.pop("models", None)
    header = "".join(f"# {line}\n" for line in note.splitlines())
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    parse(text, "<recalibrated policy>")  # what is written must load
    return text


def rethresholded(policy: Policy, source_text: str, release_min: float, note: str, group: str | None = None) -> str:
    """A new policy version: the same file with the release band starting at `release_min` (hold bands at or
    above it dropped), in the bands of calibration `group` when given (it must have bands of its own), else in
    the policy's own bands; written with `note` as its header and checked to load, as `recalibrated` writes."""
    data = yaml.safe_load(source_text)
    if group is not None:
        own = (data.get("models") or {}).get(group) or {}
        if not own.get("bands"):
            raise PolicyError(
                f"the policy gives calibration group {group!r} no bands of its own: `hitl calibrate` gives a group its"
                " own calibrator and bands; without a group, the policy's own bands move"
            )
        own["bands"] = _moved(own["bands"], release_min)
    else:
        data["bands"] = _moved(data["bands"], release_min)
    base = (policy.spec.version or "policy").split("+release-")[0]
    data["version"] = f"{base}+release-{release_min:g}" + (f"-{group}" if group else "")
    header = "".join(f"# {line}\n" for line in note.splitlines())
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    parse(text, "<rethresholded policy>")  # what is written must load
    return text


def _moved(bands: list[dict[str, Any]], release_min: float) -> list[dict[str, Any]]:
    """`bands` with the first release band starting at `release_min`; hold bands at or above it dropped."""
    first_release = next((i for i, band in enumerate(bands) if band["route"] == Route.RELEASE), None)
    if first_release is None:
        raise PolicyError("the policy has no release band to move")
    release = {**bands[first_release], "min": release_min}
    below = [dict(band) for band in bands[first_release + 1 :] if band["min"] < release_min]
    moved = [*(dict(band) for band in bands[:first_release]), release, *below]
    if moved[-1]["min"] != 0.0:
        moved[-1]["min"] = 0.0
    return moved
