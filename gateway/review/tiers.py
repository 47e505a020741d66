"""The tier rules: which queues there are, who may decide what, and where an escalation goes.

The policy's tiers are listed lowest first; the audit queue stands beside them. Agents decide the lowest
tier, seniors the two lowest, admins every tier; anyone may decide an audit review (a label on an
answer the client already has).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import InvalidRequest
from gateway.models import Review, ReviewKind, Role

# How many of the lowest tiers each role reaches; admins reach them all.
REACH = {Role.AGENT: 1, Role.SENIOR: 2}


@dataclass(frozen=True)
class Tiers:
    held: tuple[str, ...]  # the policy's tiers, lowest first
    audit: str

    @property
    def queues(self) -> list[str]:
        """Every queue the console shows: the policy's tiers, then the audit queue."""
        return [*self.held, self.audit]

    def may_decide(self, role: Role, tier: str) -> bool:
        if role == Role.ADMIN or tier == self.audit:
            return True
        return tier in self.held[: REACH[Role(role)]]

    def may_decide_review(self, role: Role, review: Review) -> bool:
        return review.kind == ReviewKind.AUDIT or self.may_decide(role, review.tier)

    def can_escalate(self, tier: str) -> bool:
        return tier in self.held[:-1]

    def above(self, review: Review) -> str:
        """The tier an escalation sends `review` to."""
        if review.kind == ReviewKind.AUDIT or review.tier not in self.held:
            raise InvalidRequest("Audit reviews are labels, not holds: they cannot be escalated.", param="action")
        if not self.can_escalate(review.tier):
            raise InvalidRequest(f"{review.tier!r} is the highest tier: there is nowhere to escalate.", param="action")
        return self.held[self.held.index(review.tier) + 1]
