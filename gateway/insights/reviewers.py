"""Reviewer quality, per agent, over the decisions on the exchanges a `Scope` takes:

- decisions, and decisions per active hour (hours with at least one of the agent's decisions);
- time per decision (median, claim to decision: `review.timing`);
- approval, edit and override rates of the decisions that close a review, beside the rate the team shows on the
  same work: the team's approval rate in each (tier, confidence band of 0.1) cell, averaged over the agent's
  decisions, so an agent given the easy reviews is not flagged for approving them;
- the gold items the agent decided and the share that matched the gold decision (`insights.agreement`);
- flags, each with its evidence: approvals faster than the answer takes to read (at `READING_CHARS_PER_SECOND`),
  an approval rate far above the team's on the same work, and approving gold answers the gold decision changed.

The gold items and second reviews themselves count only there: the rates are of the agent's ordinary work.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.insights import agreement, spans
from gateway.insights.scope import Scope
from gateway.models import Action, Agent, Decision, Exchange, Review
from gateway.review import timing

CLOSING = (Action.APPROVE, Action.EDIT, Action.OVERRIDE)
READING_CHARS_PER_SECOND = 25.0  # about 300 words a minute: a fast reader's pace
FAST_SHARE = 0.5  # flagged when at least this share of the timed approvals came faster than reading
FAST_MIN = 5  # ... of at least this many timed approvals
ABOVE_TEAM = 0.25  # flagged when the approval rate exceeds the team's on the same work by this much
ABOVE_MIN = 10  # ... over at least this many closing decisions
COLUMNS = ("agent", "decisions", "per_hour", "seconds_per_decision", "approval_rate", "edit_rate", "override_rate",
           "escalations", "team_approval_rate", "gold", "gold_accuracy")  # fmt: skip


@dataclass
class _Agent:
    name: str
    actions: Counter[str] = field(default_factory=Counter)
    hours: set[int] = field(default_factory=set)  # hours with a decision
    seconds: list[float] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)  # the team's approval rate in each closing decision's cell
    approvals_timed: int = 0
    approvals_fast: list[tuple[float, int]] = field(default_factory=list)  # (seconds, characters)


def _band(confidence: float | None) -> str:
    return "unscored" if confidence is None else f"{min(int(confidence * 10), 9) / 10:.1f}"


def _milliseconds(seconds: Any) -> float | None:
    """The database's seconds (a Decimal from PostgreSQL) as a float, to the millisecond its arithmetic is exact to."""
    return None if seconds is None else round(float(seconds), 3)


async def reviewers(session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
    """One pass over the period's decisions; the database hands back numbers and names only (the hour of each
    decision, and the seconds since its agent's claim), so tens of thousands of rows read quickly."""
    within = scope.conditions()
    query = (
        sa_select(
            col(Decision.agent_id),
            col(Decision.action),
            col(Review.tier),
            col(Exchange.confidence),
            func.length(Exchange.candidate_text),
            spans.hour(session, col(Decision.created_at)),
            spans.seconds_between(session, timing.last_claim(), col(Decision.created_at)),
        )
        .select_from(Decision)
        .join(Review, col(Review.id) == col(Decision.review_id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .where(scope.reviewed(), scope.decided(), *within)
    )
    connection = await session.connection()  # a Core statement of seven columns, past sqlmodel's overloads
    fetched = (await connection.execute(query)).all()
    rows = [(agent, str(action), tier, _band(confidence), length or 0, hour, _milliseconds(seconds))
            for agent, action, tier, confidence, length, hour, seconds in fetched]  # fmt: skip
    names = dict((await session.exec(select(Agent.id, Agent.username))).all())
    closing = {str(action) for action in CLOSING}
    cells: dict[tuple[str, str], Counter[bool]] = defaultdict(Counter)
    for _, action, tier, band, *_ in rows:
        if action in closing:
            cells[tier, band][action == Action.APPROVE] += 1
    rates = {key: cell[True] / (cell[True] + cell[False]) for key, cell in cells.items()}
    agents: dict[str, _Agent] = {}
    for agent_id, action, tier, band, length, hour, seconds in rows:
        name = names.get(agent_id, f"agent {agent_id}")
        agent = agents.get(name) or agents.setdefault(name, _Agent(name))
        agent.actions[action] += 1
        agent.hours.add(hour)
        if seconds is not None:
            agent.seconds.append(seconds)
        if action in closing:
            agent.expected.append(rates[tier, band])
        if action == Action.APPROVE and seconds is not None:
            agent.approvals_timed += 1
            if seconds < length / READING_CHARS_PER_SECOND:
                agent.approvals_fast.append((seconds, length))
    described = [_described(agent) for _, agent in sorted(agents.items())]
    golds = {scored["agent"]: scored for scored in agreement.gold(await agreement.checks(session, scope))}
    for figures in described:
        found = golds.get(figures["agent"])
        figures["gold"], figures["gold_accuracy"] = (found["gold"], found["accuracy"]) if found else (0, None)
        flag = agreement.known_wrong_flag(found) if found else None
        if flag is not None:
            figures["flags"].append(flag)
    return described


def _described(agent: _Agent) -> dict[str, Any]:
    closing = sum(agent.actions[str(action)] for action in CLOSING)
    decisions = sum(agent.actions.values())

    def rate(action: Action) -> float | None:
        return agent.actions[str(action)] / closing if closing else None

    approval = rate(Action.APPROVE)
    team = statistics.fmean(agent.expected) if agent.expected else None
    flags = []
    fast = len(agent.approvals_fast)
    if agent.approvals_timed >= FAST_MIN and fast / agent.approvals_timed >= FAST_SHARE:
        median_seconds = statistics.median(seconds for seconds, _ in agent.approvals_fast)
        median_chars = statistics.median(chars for _, chars in agent.approvals_fast)
        flags.append({
            "flag": "fast_approvals",
            "evidence": f"{fast} of {agent.approvals_timed} timed approvals came faster than the answer takes to read"
                        f" (median {median_seconds:.0f} s for {median_chars:.0f} characters)",
        })  # fmt: skip
    if approval is not None and team is not None and closing >= ABOVE_MIN and approval - team >= ABOVE_TEAM:
        flags.append({
            "flag": "approves_above_team",
            "evidence": f"approved {approval:.0%} of {closing} reviews where the team approves {team:.0%} of the"
                        " same tiers and confidence bands",
        })  # fmt: skip
    return {
        "agent": agent.name,
        "decisions": decisions,
        "per_hour": decisions / len(agent.hours) if agent.hours else None,
        "seconds_per_decision": statistics.median(agent.seconds) if agent.seconds else None,
        "approval_rate": approval,
        "edit_rate": rate(Action.EDIT),
        "override_rate": rate(Action.OVERRIDE),
        "escalations": agent.actions[str(Action.ESCALATE)],
        "team_approval_rate": team,
        "flags": flags,
    }
