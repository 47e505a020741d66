"""The Insights page: seniors and admins read the seeded week's figures (the same as the admin API's), drawn as
numbers and server-side SVG bars; agents may not; htmx refreshes only the figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.models import Role
from tests import factories


def test_a_senior_reads_the_weeks_figures(app: FastAPI, database_url: str, clock: factories.ManualClock) -> None:
    factories.seed_week(database_url)
    clock.offset = factories.WEEK_DAY + timedelta(days=2, hours=2) - datetime.now(UTC)
    factories.make_agent(database_url, "grace", "s3cret pass", Role.SENIOR)
    with TestClient(app) as client:
        factories.console_login(client, "grace", "s3cret pass")
        page = client.get("/console/insights", params=factories.WEEK)
        fragment = client.get("/console/insights", params=factories.WEEK, headers={"HX-Request": "true"})
    assert page.status_code == 200 and 'href="/console/insights"' in page.text
    volume = page.text.split('id="insight-volume"')[1]
    assert '<p class="figure">12</p>' in volume and "10 answered" in volume and "60.0%" in volume  # held 6/10
    assert 'aria-label="Decisions by kind"' in page.text and ">approve</text>" in page.text
    assert "Override rate <strong>25.0%</strong>" in page.text and "p90 <strong>100 s</strong>" in page.text
    assert "placeholder 2" in page.text and "timeout 1" in page.text
    assert fragment.text.lstrip().startswith('<section id="figures"') and "<html" not in fragment.text


def test_an_agent_may_not_read_insights(app: FastAPI, database_url: str) -> None:
    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    with TestClient(app) as client:
        factories.console_login(client, "ada", "correct horse")
        page = client.get("/console/insights")
        queue = client.get("/console/")
    assert page.status_code == 403 and "seniors and admins" in page.text
    assert 'href="/console/insights"' not in queue.text


def test_a_bad_period_is_said_on_the_page(app: FastAPI, database_url: str) -> None:
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    with TestClient(app) as client:
        factories.console_login(client, "root", "correct horse")
        page = client.get("/console/insights", params={"since": "2026-11-09", "until": "2026-11-02"})
    assert page.status_code == 400 and "since must be before until" in page.text


def test_the_page_shows_the_loop_week_by_week(app: FastAPI, database_url: str) -> None:
    factories.seed_week(database_url)
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    with TestClient(app) as client:
        factories.console_login(client, "root", "correct horse")
        page = client.get("/console/insights", params=factories.WEEK)
    loop = page.text.split('id="insight-loop"')[1].split("</table>")[0]
    assert "<td>2026-11-02</td><td>10</td><td>60.0%</td><td>0</td>" in loop  # the audit is still open
    assert "<td>p</td>" in loop  # the seeded exchanges' policy version


def test_the_page_lists_reviewers_with_their_flags(app: FastAPI, database_url: str) -> None:
    factories.seed_week(database_url)  # ada's five decisions, none timed (no claims seeded)
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    with TestClient(app) as client:
        factories.console_login(client, "root", "correct horse")
        page = client.get("/console/insights", params=factories.WEEK)
    table = page.text.split('id="insight-reviewers"')[1].split("</table>")[0]
    assert "<td>ada</td><td>5</td>" in table and "<td>none</td>" in table


def test_the_page_says_whether_the_confidence_drifted(app: FastAPI, database_url: str) -> None:
    factories.seed_scores(database_url)  # 7 labels over 7 bands: too few anywhere to warn
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    with TestClient(app) as client:
        factories.console_login(client, "root", "correct horse")
        page = client.get("/console/insights", params=factories.WEEK)
    section = page.text.split('id="insight-drift"')[1].split("</table>")[0]
    assert "No drift found" in section
    assert "<td>0.9-1.0</td><td>10.0% (0.0%)</td><td>1.0</td>" in section  # one audit of weight 2: one label
