"""The Insights page: seniors and admins read the seeded week's figures (the same as the admin API's), drawn as
numbers and server-side SVG bars; agents may not; htmx refreshes only the figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import policy
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
    # One audit of weight 2: one label; no calibrator was fitted (the default scored them): nothing at fit.
    assert "<td>0.9-1.0</td><td>10.0% (0.0%)</td><td>–</td><td>1.0</td>" in section


def test_the_simulator_answers_in_place_and_an_admin_takes_the_policy_away(
    app: FastAPI, database_url: str, clock: factories.ManualClock
) -> None:
    factories.seed_scores(database_url)  # ten answers at 0.05 ... 0.95; the bundled policy releases from 0.92
    factories.make_agent(database_url, "grace", "s3cret pass", Role.SENIOR)
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    asked = factories.WEEK | {"release": "0.6"}
    with TestClient(app) as client:
        factories.console_login(client, "grace", "s3cret pass")
        page = client.get("/console/insights", params=factories.WEEK)
        seen = client.get("/console/insights/threshold", params=asked, headers={"HX-Request": "true"})
        refused = client.get("/console/insights/threshold/policy", params=asked)
        bad = client.get("/console/insights/threshold", params=factories.WEEK | {"release": "2"})
        plain = client.get("/console/insights", params=asked)  # the form without htmx: the page with its answer
        factories.console_login(client, "root", "correct horse")
        admins = client.get("/console/insights/threshold", params=asked, headers={"HX-Request": "true"})
        written = client.get("/console/insights/threshold/policy", params=asked)
    form = page.text.split('id="simulator"')[1].split("</form>")[0]
    assert 'name="release"' in form and 'value="0.92"' in form  # it starts at the policy's own threshold
    result = seen.text.split('id="simulation-result"')[1]
    assert '<th scope="row">Review rate</th><td>90.0%</td><td>60.0%</td>' in result
    assert "<td>6 of 10</td>" in result and "median 30 s per decision, over 7 timed decisions" in seen.text
    assert "<td>6 of 10</td>" in plain.text.split('id="simulation"')[1] and 'value="0.6"' in plain.text
    assert "simulation-policy" not in seen.text and refused.status_code == 403  # a senior reads, an admin writes
    assert bad.status_code == 400 and "between 0 and 1" in bad.text
    assert 'id="simulation-policy"' in admins.text
    assert written.status_code == 200 and "attachment" in written.headers["content-disposition"]
    assert written.text.startswith("# Written by the Insights page's simulator (root)")
    assert policy.parse(written.text).releases(0.6, None)


def test_the_page_draws_the_week_day_by_day_and_narrows_by_reason(
    app: FastAPI, database_url: str, clock: factories.ManualClock
) -> None:
    factories.seed_week(database_url)
    clock.offset = factories.WEEK_DAY + timedelta(days=2, hours=2) - datetime.now(UTC)  # Wednesday 11:00
    factories.make_agent(database_url, "grace", "s3cret pass", Role.SENIOR)
    with TestClient(app) as client:
        factories.console_login(client, "grace", "s3cret pass")
        page = client.get("/console/insights", params=factories.WEEK)
        narrowed = client.get("/console/insights", params=factories.WEEK | {"reason": "rule"})
        bad = client.get("/console/insights", params=factories.WEEK | {"reason": "<script>"})
    backlog = page.text.split('aria-label="Held answers waiting at the end of each day"')[1].split("</svg>")[0]
    points = backlog.split('points="')[1].split('"')[0].split()
    assert len(points) == 3 and "max 2" in backlog  # Monday 1, Tuesday 1, Wednesday 2
    heights = [float(point.split(",")[1]) for point in points]
    assert heights[0] == heights[1] > heights[2]  # higher on the chart is a smaller y
    latency = page.text.split('aria-label="Mean upstream latency per day"')[1]
    assert latency.split("</svg>")[0].count("<polyline") == 1 and "max 175 ms" in latency
    assert '<option value="rule:high-stakes">rule high-stakes</option>' in page.text  # the bundled policy's rule
    assert '<option value="tool_calls">its tool calls</option>' in page.text
    volume = narrowed.text.split('id="insight-volume"')[1]
    assert '<p class="figure">0</p>' in volume and "routed by rule" in narrowed.text  # seeded without a reason
    assert bad.status_code == 400 and "reason: must be one of" in bad.text and "rule:&lt;name&gt;" in bad.text
