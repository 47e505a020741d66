"""Sending the notifications that are due: a Slack-compatible incoming webhook gets `{"text": ...}` (Slack,
Mattermost, Rocket.Chat and Teams' Slack-shaped hooks read it), an address gets an e-mail through the configured
SMTP server. A failure is tried again after a backoff, as the webhook outbox does; after `max_attempts` it is
`failed`, with its last error."""

from __future__ import annotations

import asyncio
import smtplib
from collections import Counter
from datetime import datetime, timedelta
from email.message import EmailMessage

import httpx
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import DeliveryStatus, Notification
from gateway.notifications.due import WEBHOOK
from gateway.settings import NotifySettings
from gateway.webhooks.sender import backoff

BATCH = 200
BACKOFF_BASE, BACKOFF_CAP = 30.0, 3600.0


class NotSent(Exception):
    """The channel refused the message."""


def _mail(settings: NotifySettings, notification: Notification) -> None:
    if settings.smtp_host is None:
        raise NotSent("no SMTP server is set (HITL_NOTIFY__SMTP_HOST)")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = settings.smtp_from, notification.target, notification.subject
    message.set_content(notification.body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(message)


async def _send(settings: NotifySettings, client: httpx.AsyncClient, notification: Notification) -> None:
    if notification.channel == WEBHOOK:
        response = await client.post(notification.target, json={"text": notification.body}, timeout=30)
        if response.status_code >= 300:
            raise NotSent(f"HTTP {response.status_code}")
    else:
        await asyncio.to_thread(_mail, settings, notification)


async def deliver(
    session: AsyncSession, settings: NotifySettings, client: httpx.AsyncClient, now: datetime
) -> Counter[str]:
    """Try every due notification once; how many were sent, will be retried, or failed for good."""
    due = (
        select(Notification)
        .where(col(Notification.status) == DeliveryStatus.PENDING, col(Notification.next_attempt_at) <= now)
        .order_by(col(Notification.id))
        .limit(BATCH)
    )
    tally: Counter[str] = Counter()
    for notification in (await session.exec(due)).all():
        tally[await attempt(session, settings, client, notification, now)] += 1
    return tally


async def attempt(
    session: AsyncSession,
    settings: NotifySettings,
    client: httpx.AsyncClient,
    notification: Notification,
    now: datetime,
) -> str:
    """Send one notification and record how it went: `sent`, `retrying` (after a backoff) or `failed` for good."""
    try:
        await _send(settings, client, notification)
    except (httpx.HTTPError, OSError, smtplib.SMTPException, ValueError, NotSent) as exc:
        notification.attempts += 1
        notification.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if notification.attempts >= settings.max_attempts:
            notification.status = DeliveryStatus.FAILED
            outcome = "failed"
        else:
            wait = backoff(notification.attempts, BACKOFF_BASE, BACKOFF_CAP)
            notification.next_attempt_at = now + timedelta(seconds=wait)
            outcome = "retrying"
    else:
        notification.status, notification.sent_at = DeliveryStatus.DELIVERED, now
        outcome = "sent"
    session.add(notification)
    await session.commit()
    return outcome
