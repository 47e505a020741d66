"""The decision service: one winner per review, roles by tier, preference pairs from edits and overrides."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from gateway.errors import Forbidden, InvalidRequest
from gateway.models import Action, Decision, Exchange, ExchangeStatus, PreferencePair, Review, Role
from gateway.review import decisions
from gateway.review.guard import ReviewAlreadyDecided
from gateway.review.tiers import Tiers
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


async def held_review(
    aclient: httpx.AsyncClient, upstream: factories.UpstreamMock, key: str, metadata: dict | None = None
) -> str:
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    body = {"model": MODEL, "messages": PROMPT, "hitl": {"wait": 0}}
    if metadata:
        body["metadata"] = metadata
    response = await aclient.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    return str(response.json()["hitl"]["review_id"])


async def test_edit_creates_pair_and_final_text(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    decided = await factories.decide_as(runtime, agent[0], review_id, Action.EDIT, text="Paris.", comment="wrong city")
    assert decided.pair is not None
    async with runtime.sessions() as session:
        pair = (await session.exec(select(PreferencePair))).one()
        exchange = await session.get(Exchange, decided.exchange.id)
        decision = (await session.exec(select(Decision))).one()
    assert (pair.prompt, pair.chosen, pair.rejected, pair.action) == (PROMPT, "Paris.", "Lyon.", Action.EDIT)
    assert exchange is not None and exchange.status == ExchangeStatus.EDITED and exchange.final_text == "Paris."
    assert decision.comment == "wrong city" and decision.text == "Paris."


async def test_approve_makes_no_pair(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    decided = await factories.decide_as(runtime, agent[0], review_id, Action.APPROVE)
    assert decided.pair is None and decided.exchange.final_text == "Lyon."


async def test_two_concurrent_decisions_one_wins(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    senior: tuple[str, str],
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    results = await asyncio.gather(
        factories.decide_as(runtime, agent[0], review_id, Action.EDIT, text="Paris."),
        factories.decide_as(runtime, senior[0], review_id, Action.OVERRIDE, text="Call us."),
        return_exceptions=True,
    )
    losers = [r for r in results if isinstance(r, ReviewAlreadyDecided)]
    winners = [r for r in results if isinstance(r, decisions.Decided)]
    assert len(winners) == 1 and len(losers) == 1, results
    async with runtime.sessions() as session:
        assert len((await session.exec(select(Decision))).all()) == 1
        assert len((await session.exec(select(PreferencePair))).all()) == 1
        exchange = (await session.exec(select(Exchange))).one()
    assert exchange.final_text == winners[0].exchange.final_text


async def test_agent_cannot_decide_senior_tier(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key, metadata={"stakes": "high"})
    with pytest.raises(Forbidden):
        await factories.decide_as(runtime, agent[0], review_id, Action.APPROVE)
    async with runtime.sessions() as session:
        assert (await session.get(Review, review_id)).status == "open"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("action", "text"), [(Action.EDIT, ""), (Action.OVERRIDE, "   "), (Action.EDIT, None), (Action.OVERRIDE, None)]
)
async def test_an_edit_or_override_needs_a_text(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    action: Action,
    text: str | None,
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    with pytest.raises(InvalidRequest, match="needs the text the client should receive"):
        await factories.decide_as(runtime, agent[0], review_id, action, text=text)


@pytest.mark.parametrize(
    ("action", "text"), [(Action.EDIT, "Lyon."), (Action.OVERRIDE, " Lyon.\n"), (Action.EDIT, "\r\nLyon.  \r\n")]
)
async def test_an_edit_identical_to_the_candidate_is_stored_as_an_approval(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    action: Action,
    text: str,
) -> None:
    """Whitespace aside, the same answer: an approval, no preference pair (a label 1, not 0, for calibration)."""
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    decided = await factories.decide_as(runtime, agent[0], review_id, action, text=text)
    assert decided.pair is None and decided.decision.action == Action.APPROVE and decided.decision.text is None
    async with runtime.sessions() as session:
        exchange = await session.get(Exchange, decided.exchange.id)
        assert (await session.exec(select(PreferencePair))).first() is None
    assert exchange is not None and exchange.status == ExchangeStatus.APPROVED and exchange.final_text == "Lyon."


@pytest.mark.parametrize("draft", ["Paris.", "Lyon, I think."])
async def test_approving_with_a_changed_draft_is_refused_and_nothing_is_decided(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    draft: str,
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    with pytest.raises(InvalidRequest, match="would throw away"):
        await factories.decide_as(runtime, agent[0], review_id, Action.APPROVE, text=draft)
    async with runtime.sessions() as session:
        review = await session.get(Review, review_id)
        assert (await session.exec(select(Decision))).first() is None
    assert review is not None and review.status == "open"
    # The candidate as it stands (line endings and spacing aside), or an empty box, approves.
    decided = await factories.decide_as(runtime, agent[0], review_id, Action.APPROVE, text="Lyon.\r\n")
    assert decided.decision.action == Action.APPROVE and decided.exchange.final_text == "Lyon."


async def test_line_endings_are_stored_and_sent_as_newlines(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    """A browser sends a textarea's line breaks as CRLF: the client, the pair and the export get LF."""
    runtime: Runtime = app.state.runtime
    review_id = await held_review(aclient, upstream, api_key)
    typed = "Paris.\r\n\r\nIt has been the capital since 987.\rSee also: Lyon."
    decided = await factories.decide_as(runtime, agent[0], review_id, Action.EDIT, text=typed)
    sent = "Paris.\n\nIt has been the capital since 987.\nSee also: Lyon."
    assert decided.decision.text == sent and decided.exchange.final_text == sent
    assert decided.pair is not None and decided.pair.chosen == sent
    polled = await aclient.get(f"/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {api_key}"})
    assert polled.json()["completion"]["choices"][0]["message"]["content"] == sent


@pytest.mark.parametrize(
    ("role", "tier", "allowed"),
    [
        (Role.AGENT, "agent", True),
        (Role.AGENT, "senior", False),
        (Role.SENIOR, "senior", True),
        (Role.SENIOR, "legal", False),
        (Role.ADMIN, "legal", True),
    ],
)
def test_can_decide(role: Role, tier: str, allowed: bool) -> None:
    assert Tiers(held=("agent", "senior", "legal"), audit="audit").may_decide(role, tier) is allowed
