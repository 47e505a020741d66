"""What is due to be said, as notification rows, each made once (by its key) whichever process finds it:

- `sla`: an open held review that has waited past its tier's `sla`, to each of the tier's channels;
- `digest`: from `digest_hour` (UTC) each day, a tier's counts (waiting, decided in the last 24 h), how long the
  oldest has waited, and a link to the queue;
- `deadline`: an open held review whose client's wait ends within its tier's `deadline` seconds (found by the
  serving processes every second, `notifications.watch`, and sent at once).

A message names reviews by id and links to them; it never carries a conversation's text (a channel is not a
place a customer's words should be copied to, and erasure could not reach them there).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Notification, Review, ReviewKind, ReviewStatus
from gateway.policy import Notify, Policy

WEBHOOK, EMAIL = "webhook", "email"
CLAIM_SECONDS = 60.0  # a deadline warning is its finder's to send for this long before `hitl notify` may retry it


def _targets(notify: Notify) -> list[tuple[str, str]]:
    return ([(WEBHOOK, notify.webhook)] if notify.webhook else []) + [(EMAIL, address) for address in notify.email]


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def find(session: AsyncSession, policy: Policy, console_url: str, digest_hour: int, now: datetime) -> int:
    """Add every notification now due that is not made yet; the number added."""
    made: list[Notification] = []
    base = console_url.rstrip("/")
    for tier, notify in policy.spec.notify.items():
        targets = _targets(notify)
        sla = policy.sla(tier)
        if notify.sla and sla is not None:
            late = select(Review.id, Review.created_at).where(
                col(Review.tier) == tier,
                col(Review.kind) == ReviewKind.HOLD,
                col(Review.status) == ReviewStatus.OPEN,
                col(Review.shadow).is_(None),  # no client waits on a gold item or a second review
                col(Review.created_at) <= now - timedelta(seconds=sla),
            )
            for review_id, created in (await session.exec(late)).all():
                waited = _duration((now - created).total_seconds())
                subject = f"[hitl] review {review_id} in {tier} has waited {waited} (SLA {_duration(sla)})"
                body = f"{subject}.\nOpen it: {base}/console/reviews/{review_id}"
                for channel, target in targets:
                    made.append(Notification(key=_key("sla", review_id, channel, target), kind="sla", tier=tier,
                                             review_id=review_id, channel=channel, target=target, subject=subject,
                                             body=body, next_attempt_at=now, created_at=now))  # fmt: skip
        if notify.digest and now.hour >= digest_hour:
            made += await _digest(session, tier, targets, base, now)
    fresh = [row for row in made if not await _exists(session, row.key)]
    session.add_all(fresh)
    await session.commit()
    return len(fresh)


async def _exists(session: AsyncSession, key: str) -> bool:
    return (await session.exec(select(Notification.id).where(col(Notification.key) == key))).first() is not None


async def _digest(
    session: AsyncSession, tier: str, targets: list[tuple[str, str]], base: str, now: datetime
) -> list[Notification]:
    day = now.date().isoformat()
    made = [await _exists(session, _key("digest", tier, day, channel, target)) for channel, target in targets]
    if all(made):
        return []
    waiting = select(func.count(), func.min(Review.created_at)).where(
        col(Review.tier) == tier, col(Review.status) == ReviewStatus.OPEN, col(Review.shadow).is_(None)
    )
    count, oldest = (await session.exec(waiting)).one()
    decided = select(func.count()).where(
        col(Review.tier) == tier,
        col(Review.shadow).is_(None),
        col(Review.status) == ReviewStatus.DECIDED,
        col(Review.decided_at) >= now - timedelta(days=1),
    )
    done = (await session.exec(decided)).one()
    if oldest is not None and not isinstance(oldest, datetime):  # SQLite's MIN() gives the stored text
        oldest = datetime.fromisoformat(str(oldest))
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    longest = f"; the oldest has waited {_duration((now - oldest).total_seconds())}" if oldest else ""
    subject = f"[hitl] {tier} on {day}: {count} waiting, {done} decided in the last 24 h"
    body = f"{subject}{longest}.\nThe queue: {base}/console/?tier={tier}"
    return [
        Notification(
            key=_key("digest", tier, day, channel, target),
            kind="digest",
            tier=tier,
            channel=channel,
            target=target,
            subject=subject,
            body=body,
            next_attempt_at=now,
            created_at=now,
        )  # fmt: skip
        for channel, target in targets
    ]


async def near_deadline(session: AsyncSession, policy: Policy, console_url: str, now: datetime) -> list[Notification]:
    """The deadline warnings due now and not made yet: each open held review whose deadline is at most its tier's
    `deadline` seconds away, once per channel. Each is made already claimed for `CLAIM_SECONDS` (its finder sends
    it at once); one whose send failed is retried by `hitl notify` like any other."""
    made: list[Notification] = []
    base = console_url.rstrip("/")
    for tier, notify in policy.spec.notify.items():
        if notify.deadline is None:
            continue
        near = select(Review.id, Review.deadline_at).where(
            col(Review.tier) == tier,
            col(Review.kind) == ReviewKind.HOLD,
            col(Review.status) == ReviewStatus.OPEN,
            col(Review.shadow).is_(None),  # no client waits on a gold item or a second review
            col(Review.deadline_at) > now,
            col(Review.deadline_at) <= now + timedelta(seconds=notify.deadline),
        )
        for review_id, deadline in (await session.exec(near)).all():
            left = _duration(max((deadline - now).total_seconds(), 0.0))
            subject = f"[hitl] review {review_id} in {tier}: its client's wait ends in {left}"
            body = f"{subject}; then it gets the tier's deadline outcome.\nOpen it: {base}/console/reviews/{review_id}"
            for channel, target in _targets(notify):
                key = _key("deadline", review_id, channel, target)
                if await _exists(session, key):
                    continue
                made.append(Notification(key=key, kind="deadline", tier=tier, review_id=review_id, channel=channel,
                                         target=target, subject=subject, body=body, created_at=now,
                                         next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS)))  # fmt: skip
    return made
