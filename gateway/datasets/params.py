"""An export plan from query parameters, the same for the admin API and the console page: `format`, the
filters (`since`, `until`, `after_cursor`, `model`, `tier`, `agent`, `tag`, `action` (these five repeatable),
`min_confidence`, `max_confidence`), `min_edit_ratio`, `keep_duplicates`, `test_size`, `seed`, `split`
(`train` or `test`: one side only) and `with_metadata`. A bad value is a 400 that names it."""

from __future__ import annotations

from starlette.datastructures import QueryParams

from gateway.datasets import filters, formats
from gateway.datasets.export import TEST, TRAIN, Plan, Split
from gateway.datasets.quality import Quality
from gateway.errors import InvalidRequest

TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _number(params: QueryParams, name: str, default: float, low: float, high: float) -> float:
    given = params.get(name)
    if given in (None, ""):
        return default
    try:
        value = float(given)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number, not {given[:40]!r}.", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}.", param=name)
    return value


def _flag(params: QueryParams, name: str) -> bool:
    given = (params.get(name) or "").lower()
    if given not in TRUE + FALSE:
        raise InvalidRequest(f"{name} must be true or false.", param=name)
    return given in TRUE


def plan(params: QueryParams, format_name: str | None = None) -> tuple[Plan, str | None]:
    """The plan the parameters ask for, and the side to send (None for every row)."""
    chosen = {
        "since": params.get("since"),
        "until": params.get("until"),
        "after_cursor": params.get("after_cursor"),
        "models": params.getlist("model"),
        "tiers": params.getlist("tier"),
        "agents": params.getlist("agent"),
        "tags": params.getlist("tag"),
        "actions": params.getlist("action"),
        "min_confidence": params.get("min_confidence"),
        "max_confidence": params.get("max_confidence"),
    }
    side = params.get("split") or None
    if side not in (None, TRAIN, TEST):
        raise InvalidRequest("split must be train or test.", param="split")
    test_size = _number(params, "test_size", 0.0, 0.0, 0.9)
    if side == TEST and test_size <= 0:
        raise InvalidRequest("split=test needs a test_size above 0.", param="split")
    found = Plan(
        format=formats.named(format_name or params.get("format") or "dpo"),
        filters=filters.parse(chosen),
        quality=Quality(_number(params, "min_edit_ratio", 0.0, 0.0, 1.0)),
        options=formats.Options(with_metadata=_flag(params, "with_metadata")),
        split=Split(test_size, params.get("seed") or "hitl"),
        dedupe=not _flag(params, "keep_duplicates"),
    )
    return found, side
