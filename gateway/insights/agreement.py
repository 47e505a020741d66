"""How reviewers agree with what is known, over the checks decided in a period (`review.shadows`):

- gold: per agent, the gold items decided, how many matched the gold decision's label (approve = the answer was
  right; edit or override = it was not), and how many answers the gold decision changed the agent approved,
  beside the team's rate on the same gold items;
- second reviews: per pair of agents and per tier, the two independent decisions on the same held answers, their
  raw agreement and Cohen's kappa over approve / edit / override, which discounts the agreement
  two reviewers would reach by chance at their own rates. Kappa is left out (None) where it is undefined: every
  decision of both the same.

The period and tier are the check's: its decision in `[since, until)`, in that tier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.insights.scope import Scope
from gateway.models import Action, Agent, Decision, Exchange, Review, Shadow

CLOSING = (Action.APPROVE, Action.EDIT, Action.OVERRIDE)
KNOWN_WRONG_MIN = 3  # flagged when an agent approved at least this many gold answers the gold decision changed
KNOWN_WRONG_SHARE = 0.5  # ... and at least this share of those the agent was served


def _right(action: Action) -> bool:
    """A decision's label, as `learning.labels` reads it: approved, the answer was right; changed, it was not."""
    return action == Action.APPROVE


@dataclass(frozen=True)
class Check:
    shadow: Shadow
    tier: str
    agent: str
    action: Action  # the check's decision
    first_agent: str
    first_action: Action  # the original's closing decision (the gold decision, or the first review's)


async def checks(session: AsyncSession, scope: Scope) -> list[Check]:
    """Every check decided in the period, each beside the decision it is compared with."""
    names = dict((await session.exec(select(Agent.id, Agent.username))).all())
    copy = aliased(Exchange)
    decided = (
        select(Review, Decision)
        .join(Decision, col(Decision.review_id) == col(Review.id))
        .where(col(Review.shadow).is_not(None), col(Decision.action).in_(list(CLOSING)))
        .where(col(Decision.created_at) >= scope.since, col(Decision.created_at) < scope.until)
    )  # unordered, so the database starts from the few checks (their own index), not from every decision
    if scope.tier is not None:
        decided = decided.where(col(Review.tier) == scope.tier)
    last: dict[str, tuple[Review, Decision]] = {}  # a check's last closing decision counts
    for review, decision in (await session.exec(decided)).all():
        kept = last.get(review.exchange_id)
        if kept is None or (decision.id or 0) > (kept[1].id or 0):
            last[review.exchange_id] = (review, decision)
    if not last:
        return []
    original = aliased(Review)
    firsts = (
        select(copy.id, Decision)
        .join(original, col(original.exchange_id) == col(copy.copy_of))
        .join(Decision, col(Decision.review_id) == col(original.id))
        .where(col(copy.id).in_(list(last)), col(Decision.action).in_(list(CLOSING)))
        .order_by(col(Decision.id))
    )
    first: dict[str, Decision] = {}
    for copy_id, decision in (await session.exec(firsts)).all():
        first[copy_id] = decision
    return [
        Check(Shadow(review.shadow or Shadow.GOLD), review.tier, names.get(decision.agent_id, "?"),
              Action(decision.action), names.get(first[copy_id].agent_id, "?"), Action(first[copy_id].action))
        for copy_id, (review, decision) in last.items() if copy_id in first
    ]  # fmt: skip


def gold(found: list[Check]) -> list[dict[str, Any]]:
    """Per agent: gold items decided, matched, and the changed answers approved (with the team's rate)."""
    served = [check for check in found if check.shadow == Shadow.GOLD]
    wrong = [check for check in served if not _right(check.first_action)]
    team = sum(check.action == Action.APPROVE for check in wrong) / len(wrong) if wrong else None
    rows = []
    for agent in sorted({check.agent for check in served}):
        own = [check for check in served if check.agent == agent]
        matched = sum(_right(check.action) == _right(check.first_action) for check in own)
        own_wrong = [check for check in own if not _right(check.first_action)]
        approved_wrong = sum(check.action == Action.APPROVE for check in own_wrong)
        rows.append({"agent": agent, "gold": len(own), "matched": matched, "accuracy": matched / len(own),
                     "gold_wrong": len(own_wrong), "approved_wrong": approved_wrong,
                     "team_approved_wrong": team})  # fmt: skip
    return rows


def known_wrong_flag(row: dict[str, Any]) -> dict[str, str] | None:
    """The flag for approving answers the gold decisions say were wrong, with its evidence; None when not due."""
    approved, served = row["approved_wrong"], row["gold_wrong"]
    if approved < KNOWN_WRONG_MIN or approved / served < KNOWN_WRONG_SHARE:
        return None
    team = row["team_approved_wrong"]
    return {
        "flag": "approves_known_wrong",
        "evidence": f"approved {approved} of {served} gold answers that the gold decision changed"
                    + (f" (the team approves {team:.0%} of them)" if team is not None else ""),
    }  # fmt: skip


def _kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two raters' decisions on the same items: (observed agreement - chance agreement) /
    (1 - chance agreement), chance from each rater's own rates (Cohen 1960; scikit-learn's `cohen_kappa_score` gives
    the same, and the tests check it does, but the serving process does not load scikit-learn)."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    chance = sum(first.count(kind) * second.count(kind) for kind in set(first) | set(second)) / (n * n)
    if chance >= 1.0:
        return None  # every decision of both the same: chance agreement is certain, kappa is undefined
    return round((observed - chance) / (1.0 - chance), 4)


def second_reviews(found: list[Check]) -> dict[str, list[dict[str, Any]]]:
    """Agreement of the two independent reviews of the same answers: per pair of agents, and per tier."""
    groups: dict[str, dict[tuple[str, ...], list[Check]]] = {"pairs": defaultdict(list), "tiers": defaultdict(list)}
    for check in found:
        if check.shadow == Shadow.SECOND:
            groups["pairs"][tuple(sorted((check.first_agent, check.agent)))].append(check)
            groups["tiers"][(check.tier,)].append(check)
    described: dict[str, list[dict[str, Any]]] = {}
    for name, grouped in groups.items():
        rows = []
        for key, members in sorted(grouped.items()):
            firsts = [str(check.first_action) for check in members]
            seconds = [str(check.action) for check in members]
            same = sum(a == b for a, b in zip(firsts, seconds, strict=True))
            head = {"agents": " & ".join(key)} if name == "pairs" else {"tier": key[0]}
            rows.append({**head, "reviewed_twice": len(members), "agreement": same / len(members),
                         "kappa": _kappa(firsts, seconds)})  # fmt: skip
        described[name] = rows
    return described


async def agreement(session: AsyncSession, scope: Scope) -> dict[str, Any]:
    found = await checks(session, scope)
    return {"scope": scope.described(), "gold": gold(found), **second_reviews(found)}
