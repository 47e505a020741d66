"""Gold items and second reviews (`gateway.review.shadows`): an admin marks a decided review gold, an agent is
served a copy of it as an ordinary held review and scored against the gold decision; a held answer's second review
goes to another agent, and the two decisions' agreement is Cohen's kappa. No copy's decision reaches a client, a
webhook, an approved answer, the labels or an export, and the period's figures count only originals."""

from __future__ import annotations

import csv
import dataclasses
import io

import httpx
import pytest
from fastapi import FastAPI
from sklearn.metrics import cohen_kappa_score
from sqlmodel import col, select

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.insights import agreement, scope, summary
from gateway.learning import labels
from gateway.models import (
    Action,
    Agent,
    ApiKey,
    ApprovedAnswer,
    EventKind,
    Exchange,
    KeyRole,
    PreferencePair,
    Review,
    ReviewEvent,
    ReviewStatus,
    Role,
    Shadow,
    WebhookDelivery,
)
from gateway.retention import removal
from gateway.runtime import Runtime
from gateway.settings import QualitySettings
from tests import factories


def with_quality(runtime: Runtime, **quality: float) -> object:
    """The app's review desk drawing gold items and second reviews at these rates (every draw 0: always)."""
    return dataclasses.replace(runtime.desk, quality=QualitySettings(**quality), draw=lambda: 0.0)


async def open_checks(runtime: Runtime, shadow: Shadow) -> list[tuple[Review, Exchange]]:
    async with runtime.sessions() as session:
        query = (
            select(Review, Exchange)
            .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
            .where(col(Review.shadow) == shadow, col(Review.status) == ReviewStatus.OPEN)
            .order_by(col(Review.created_at))
        )
        return list((await session.exec(query)).all())


async def trail(runtime: Runtime, review_id: str) -> list[tuple[str, int | None, dict[str, object]]]:
    async with runtime.sessions() as session:
        query = select(ReviewEvent).where(ReviewEvent.review_id == review_id).order_by(col(ReviewEvent.id))
        return [(event.kind, event.agent_id, event.detail) for event in (await session.exec(query)).all()]


async def agent_named(runtime: Runtime, name: str) -> Agent:
    async with runtime.sessions() as session:
        return (await session.exec(select(Agent).where(Agent.username == name))).one()


def a_webhook_for(database_url: str) -> None:
    with factories.sync_session(database_url) as session:
        for key in session.exec(select(ApiKey)).all():
            key.webhook_url = "https://app.example.com/hooks"
            session.add(key)
        session.commit()


async def test_a_gold_item_is_served_scored_and_reaches_nobody(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    runtime: Runtime = app.state.runtime
    for name, role in (("ada", Role.AGENT), ("bob", Role.AGENT), ("root", Role.ADMIN)):
        factories.make_agent(database_url, name, "correct horse", role)
    a_webhook_for(database_url)
    answer = factories.completion_body("Lyon.", logprob=-0.2)
    golden = await factories.held_review(aclient, upstream, api_key, "Capital of France?", answer)
    undecided = await factories.held_review(aclient, upstream, api_key, "Opening hours?", answer)
    await factories.decide_as(runtime, "ada", golden, Action.EDIT, text="Paris.")
    root = await agent_named(runtime, "root")
    with pytest.raises(Conflict, match="decided"):
        await runtime.desk.mark_gold(undecided, root)
    await runtime.desk.mark_gold(golden, root)
    assert await runtime.desk.is_gold(golden)

    desk = with_quality(runtime, gold_share=0.5)  # every draw is 0: it is always served
    second = await factories.held_review(aclient, upstream, api_key, "Is my refund on its way?", answer)
    await factories.decide_as(runtime, "bob", second, Action.APPROVE, desk=desk)  # bob is served the gold item
    ((review, copy),) = await open_checks(runtime, Shadow.GOLD)
    bob = await agent_named(runtime, "bob")
    async with runtime.sessions() as session:
        original = (await session.exec(select(Exchange).join(Review).where(Review.id == golden))).one()
    assert review.assigned_to == bob.id and review.tier == "agent" and copy.copy_of == original.id
    assert copy.candidate_text == "Lyon." and copy.request == original.request and copy.final_text is None
    # Its trail is an ordinary assigned review's: held into the tier's queue, then assigned (by the gateway).
    assert await trail(runtime, review.id) == [
        (EventKind.HELD, None, {"tier": "agent"}), (EventKind.ASSIGNED, None, {"to": "bob", "from": None})]  # fmt: skip

    third = await factories.held_review(aclient, upstream, api_key, "Where is my parcel?", answer)
    await factories.decide_as(runtime, "bob", third, Action.APPROVE, desk=desk)
    assert len(await open_checks(runtime, Shadow.GOLD)) == 1  # one waits in bob's queue: no second one
    await factories.decide_as(runtime, "bob", review.id, Action.OVERRIDE, text="Paris, of course.", desk=desk)
    fourth = await factories.held_review(aclient, upstream, api_key, "Do you ship abroad?", answer)
    await factories.decide_as(runtime, "bob", fourth, Action.APPROVE, desk=desk)
    await factories.decide_as(runtime, "ada", undecided, Action.APPROVE, desk=desk)
    assert not await open_checks(runtime, Shadow.GOLD)  # bob was served it; ada decided it: nobody is due one

    async with runtime.sessions() as session:
        checks = await agreement.checks(session, scope.parse({}, runtime.clock.now()))
        outbox = [row.payload for row in (await session.exec(select(WebhookDelivery))).all()]
        pairs = (await session.exec(select(PreferencePair.exchange_id))).all()
        remembered = (await session.exec(select(ApprovedAnswer.review_id))).all()
        copied = await session.get(Exchange, copy.id)
    traffic = await summary.summary(runtime.engine, scope.parse({}, runtime.clock.now()), runtime.clock.now())
    assert [(check.agent, check.action, check.first_agent, check.first_action) for check in checks] == [
        ("bob", Action.OVERRIDE, "ada", Action.EDIT)]  # fmt: skip
    assert agreement.gold(checks)[0] | {"team_approved_wrong": None} == {
        "agent": "bob", "gold": 1, "matched": 1, "accuracy": 1.0, "gold_wrong": 1, "approved_wrong": 0,
        "team_approved_wrong": None}  # fmt: skip
    assert copied is not None and copied.final_text == "Paris, of course."  # decided, on the copy only
    assert all((payload.get("data") or {}).get("exchange_id") != copy.id for payload in outbox) and outbox
    assert pairs == [original.id] and review.id not in remembered  # the copy's override is no training pair
    records = await factories.export_rows(database_url, "records", dedupe=False)
    assert len(records) == 5 and review.id not in {row["review_id"] for row in records}  # five ordinary decisions
    assert traffic["volume"] == 5 and traffic["decisions"]["override"] == 0  # the originals only

    async with runtime.sessions() as session:
        removed = await removal.remove(session, [original.id])  # erasing the original takes its copy
        left = (await session.exec(select(Exchange.id).where(col(Exchange.id).in_([original.id, copy.id])))).all()
    assert removed["exchanges"] == 2 and removed["gold_items"] == 1 and not left


async def test_only_a_decided_held_answer_is_gold(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    runtime: Runtime = app.state.runtime
    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    answer = factories.completion_body("Lyon.", logprob=-0.2)
    review = await factories.held_review(aclient, upstream, api_key, "Capital of France?", answer)
    await factories.decide_as(runtime, "ada", review, Action.APPROVE, desk=with_quality(runtime, second_review_rate=1))
    ((second, _),) = await open_checks(runtime, Shadow.SECOND)  # the admin is the only other agent who may
    root = await agent_named(runtime, "root")
    with pytest.raises(InvalidRequest, match="not a copy"):
        await runtime.desk.mark_gold(second.id, root)
    with pytest.raises(NotFound, match="No review"):
        await runtime.desk.mark_gold("rev-0123456789abcdef0123456789abcdef", root)
    await runtime.desk.mark_gold(review, root)
    await runtime.desk.unmark_gold(review)
    assert not await runtime.desk.is_gold(review)


async def test_a_second_review_goes_to_another_agent_and_kappa_measures_the_pair(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    runtime: Runtime = app.state.runtime
    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    factories.make_agent(database_url, "bob", "correct horse", Role.AGENT)
    factories.make_agent(database_url, "grace", "correct horse", Role.SENIOR)  # may decide it too; a draw of 0: bob
    desk = with_quality(runtime, second_review_rate=1.0)
    answer = factories.completion_body("Lyon.", logprob=-0.2)
    firsts = [(Action.APPROVE, None), (Action.EDIT, "Paris."), (Action.OVERRIDE, "Ask the front desk.")]
    originals = []
    for number, (action, text) in enumerate(firsts):
        review = await factories.held_review(aclient, upstream, api_key, f"Question {number}?", answer)
        await factories.decide_as(runtime, "ada", review, action, text=text, desk=desk)
        originals.append(review)
    copies = await open_checks(runtime, Shadow.SECOND)
    bob = await agent_named(runtime, "bob")
    assert len(copies) == 3 and {review.assigned_to for review, _ in copies} == {bob.id}
    assert await trail(runtime, copies[0][0].id) == [
        (EventKind.HELD, None, {"tier": "agent"}), (EventKind.ASSIGNED, None, {"to": "bob", "from": None})]  # fmt: skip
    with pytest.raises(Forbidden, match="first review"):
        await factories.decide_as(runtime, "ada", copies[0][0].id, Action.APPROVE, desk=desk)
    seconds = [(Action.APPROVE, None), (Action.EDIT, "Paris!"), (Action.APPROVE, None)]
    for (review, _), (action, text) in zip(copies, seconds, strict=True):
        await factories.decide_as(runtime, "bob", review.id, action, text=text, desk=desk)
    assert not await open_checks(runtime, Shadow.SECOND)  # a second review brings no third

    async with runtime.sessions() as session:
        found = await agreement.agreement(session, scope.parse({}, runtime.clock.now()))
        finals = (await session.exec(select(Exchange.final_text).where(col(Exchange.copy_of).is_(None)))).all()
    # Observed agreement 2/3; by chance (ada: A, E, O; bob: A, E, A) 1/3 * 2/3 + 1/3 * 1/3 = 1/3.
    chance = (1 / 3) * (2 / 3) + (1 / 3) * (1 / 3)
    expected = (2 / 3 - chance) / (1 - chance)
    (pair,) = found["pairs"]
    assert pair["agents"] == "ada & bob" and pair["reviewed_twice"] == 3 and pair["agreement"] == pytest.approx(2 / 3)
    assert pair["kappa"] == pytest.approx(expected, abs=1e-4) and found["tiers"][0]["tier"] == "agent"
    firsts, seconds_ = ["approve", "edit", "override"], ["approve", "edit", "approve"]
    assert pair["kappa"] == pytest.approx(cohen_kappa_score(firsts, seconds_), abs=1e-4)  # scikit-learn agrees
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    sheet = await aclient.get("/admin/insights/agreement", params={"format": "csv"},
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    rows = {row["group"]: row for row in csv.DictReader(io.StringIO(sheet.text))}
    assert rows["pair"]["name"] == "ada & bob" and float(rows["pair"]["kappa"]) == pytest.approx(expected, abs=1e-4)
    assert rows["tier"]["name"] == "agent" and rows["tier"]["count"] == "3"
    await factories.aconsole_login(aclient, "grace", "correct horse")
    page = await aclient.get("/console/insights")
    kappa = page.text.split('id="insight-kappa"')[1].split("</table>")[0]
    assert "<td>ada &amp; bob</td><td>3</td><td>66.7%</td><td>0.50</td>" in kappa and "<td>tier agent</td>" in kappa
    assert sorted(finals) == sorted(["Lyon.", "Paris.", "Ask the front desk."])  # the clients got the first decisions
    async with runtime.sessions() as session:
        taught = await labels.load_labels(session)
    assert len(taught.labels) == 3  # the second decisions teach the model nothing


def test_an_agent_who_approves_what_gold_changed_is_flagged() -> None:
    def check(agent: str, action: Action, gold: Action) -> agreement.Check:
        return agreement.Check(Shadow.GOLD, "agent", agent, action, "root", gold)

    found = [check("ada", Action.APPROVE, Action.EDIT) for _ in range(3)] + [check("ada", Action.EDIT, Action.EDIT)]
    found += [check("bob", Action.OVERRIDE, Action.OVERRIDE), check("bob", Action.APPROVE, Action.APPROVE)]
    ada, bob = agreement.gold(found)
    assert (ada["gold"], ada["matched"], ada["approved_wrong"], ada["gold_wrong"]) == (4, 1, 3, 4)
    assert ada["team_approved_wrong"] == pytest.approx(3 / 5)  # 3 of the 5 changed gold answers were approved
    flag = agreement.known_wrong_flag(ada)
    assert flag is not None and flag["evidence"] == "approved 3 of 4 gold answers that the gold decision changed" \
        " (the team approves 60% of them)"  # fmt: skip
    assert agreement.known_wrong_flag(bob) is None and bob["accuracy"] == 1.0
    same = [agreement.Check(Shadow.SECOND, "agent", "bob", Action.APPROVE, "ada", Action.APPROVE)] * 2
    assert agreement.second_reviews(same)["pairs"][0]["kappa"] is None  # undefined: every decision the same
