"""The insights admin API on a seeded history whose figures are known: every number of the summary is checked
against what the history says, the scope narrows it, the CSV says the same, and only an insights key reads it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway import policy
from gateway.learning import drift
from gateway.learning.labels import Labels
from gateway.models import (
    Action,
    ApiKey,
    Calibration,
    Decision,
    EventKind,
    Exchange,
    ExchangeStatus,
    KeyRole,
    Review,
    ReviewEvent,
    ReviewKind,
    ReviewStatus,
    Route,
)
from tests import factories


@pytest.fixture
def insights(app: FastAPI, database_url: str, clock: factories.ManualClock) -> tuple[TestClient, dict[str, str]]:
    factories.seed_week(database_url)
    clock.offset = factories.WEEK_DAY + timedelta(days=2, hours=2) - datetime.now(UTC)  # the late review has waited 2 h
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    return TestClient(app), {"Authorization": f"Bearer {key}"}


def test_the_summary_counts_the_seeded_week(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights
    with client:
        found = client.get("/admin/insights/summary", params=factories.WEEK, headers=headers).json()
    assert found["volume"] == 12 and found["answered"] == 10
    assert found["shares"] == {"released": 4 / 10, "held": 6 / 10, "audited": 1 / 10}
    assert found["decisions"] == {"approve": 2, "edit": 1, "override": 1, "escalate": 1}
    assert found["rates"] == {"override": 1 / 4, "edit": 1 / 4}
    assert found["time_to_decision_s"] == {"p50": 20.0, "p90": 100.0, "decided": 4}  # 10, 20, 60, 100
    assert found["decided_while_waiting"] == 3 / 4  # all but the override
    assert found["deadline_outcomes"] == {"placeholder": 2}
    oldest = 2 * 86400 + 3600 - 3 * 60  # the escalated one, from its arrival to the summary
    assert found["backlog"] == {"open": 2, "oldest_waiting_s": pytest.approx(oldest, abs=5)}
    assert found["upstream"] == {
        "failures": {"http_error": 1, "timeout": 1},
        "failure_rate": 2 / 12,
        "latency_ms": {"p50": 100.0, "p90": 300.0},  # seven at 100, then 200, 300, 400
    }


@pytest.mark.parametrize(
    ("narrowed", "volume", "held"),
    [({"tier": "senior"}, 1, 1), ({"model": "other-bot"}, 1, 1), ({"api_key": "web"}, 10, 5)],
)
def test_the_scope_narrows_every_figure(
    insights: tuple[TestClient, dict[str, str]], database_url: str, narrowed: dict[str, str], volume: int, held: int
) -> None:
    client, headers = insights
    if "api_key" in narrowed:  # by its id, as the console and `hitl keys list` show it
        with factories.sync_session(database_url) as session:
            key = session.exec(select(ApiKey).where(ApiKey.name == narrowed["api_key"])).one()
        narrowed = {"api_key": str(key.id)}
    with client:
        found = client.get("/admin/insights/summary", params=factories.WEEK | narrowed, headers=headers).json()
    assert found["volume"] == volume and found["shares"]["held"] * found["answered"] == pytest.approx(held)


def test_the_csv_says_what_the_json_says(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights
    with client:
        shown = client.get("/admin/insights/summary", params=factories.WEEK, headers=headers).json()
        sent = client.get("/admin/insights/summary", params=factories.WEEK | {"format": "csv"}, headers=headers)
    assert sent.headers["content-type"].startswith("text/csv")
    table = dict(csv.reader(io.StringIO(sent.text)))
    assert table["figure"] == "value" and table["volume"] == "12" and table["decisions.override"] == "1"
    assert float(table["time_to_decision_s.p90"]) == shown["time_to_decision_s"]["p90"]
    assert table["scope.since"] == "2026-11-02T00:00:00Z" and table["upstream.failures.timeout"] == "1"


def test_the_default_period_is_the_last_seven_days(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights
    with client:
        found = client.get("/admin/insights/summary", headers=headers).json()
    assert found["scope"]["until"].startswith("2026-11-04T11:00") and found["scope"]["since"].startswith("2026-10-28")
    assert found["volume"] == 13  # the week before's exchange too


@pytest.mark.parametrize(
    ("params", "param"),
    [({"since": "yesterday"}, "since"), ({"since": "2026-11-09", "until": "2026-11-02"}, "since"),
     ({"api_key": "web"}, "api_key"), ({"format": "xml"}, "format"), ({"colour": "red"}, "colour")],
)  # fmt: skip
def test_a_bad_parameter_is_a_400_that_names_it(
    insights: tuple[TestClient, dict[str, str]], params: dict[str, str], param: str
) -> None:
    client, headers = insights
    with client:
        sent = client.get("/admin/insights/summary", params=params, headers=headers)
    assert sent.status_code == 400 and param in sent.json()["error"]["message"], sent.text


def test_the_reason_narrows_to_one_kind_of_routing_or_one_rule(
    app: FastAPI, database_url: str, clock: factories.ManualClock
) -> None:
    reasons = ["rule 'refunds' matched (metadata.topic=refund)", "rule 'refunds' matched (metadata.topic=refund)",
               "rule 'pii%' matched (content ~ ssn)", "rule 'piiX' matched (content ~ card)",
               "confidence 0.412 in [0.3, 0.92) -> agent", "unscored (logprobs missing)",
               "progressive: 120 characters sent, the rest held; confidence 0.5 in [0.3, 0.92) -> agent",
               "upstream failed: timeout"]  # fmt: skip
    with factories.sync_session(database_url) as session:
        key = factories.key_named(session, "web")
        rows = [Exchange(request_id="r", api_key_id=key, model="m", upstream_model="m", request={}, response={},
                         signals={}, policy_version="p", route=Route.NONE if "failed" in reason else Route.HOLD,
                         status=ExchangeStatus.HELD, reason=reason, created_at=factories.WEEK_DAY)
                for reason in reasons]  # fmt: skip
        factories.add_in_order(session, rows)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    headers = {"Authorization": f"Bearer {key}"}
    counted = {"rule": 4, "rule:refunds": 2, "rule:pii%": 1, "confidence": 1, "unscored": 1, "progressive": 1,
               "upstream_failed": 1, "reused": 0}  # fmt: skip
    with TestClient(app) as client:
        found = {
            reason: client.get(
                "/admin/insights/summary", params=factories.WEEK | {"reason": reason}, headers=headers
            ).json()  # fmt: skip
            for reason in counted
        }
        refused = [client.get("/admin/insights/summary", params={"reason": reason}, headers=headers)
                   for reason in ("colour", "confidence:0.4", "rule:")]  # fmt: skip
        threshold = client.get("/admin/insights/threshold", params={"release": "0.5", "reason": "rule"},
                               headers=headers)  # fmt: skip
    assert {reason: figures["volume"] for reason, figures in found.items()} == counted
    assert found["upstream_failed"]["upstream"]["failures"] == {"unknown": 1}
    assert found["rule:refunds"]["scope"]["reason"] == "rule:refunds"
    for sent in refused:
        assert sent.status_code == 400 and sent.json()["error"]["param"] == "reason", sent.text
    assert "rule:<name>" in refused[0].json()["error"]["message"]
    assert threshold.status_code == 400 and threshold.json()["error"]["param"] == "reason"


def test_the_series_counts_each_day_and_carries_the_backlog(insights: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = insights  # now is Wednesday 11:00: three days of the week have begun
    with client:
        daily = client.get("/admin/insights/series", params=factories.WEEK, headers=headers).json()
        morning = {"since": "2026-11-02T09:00:00Z", "until": "2026-11-02T12:00:00Z"}
        hourly = client.get("/admin/insights/series", params=morning, headers=headers).json()
        sheet = client.get("/admin/insights/series", params=factories.WEEK | {"format": "csv"}, headers=headers)
    days = [bucket["start"][:10] for bucket in daily["buckets"]]
    assert daily["bucket"] == "day" and days == ["2026-11-02", "2026-11-03", "2026-11-04"]
    monday, tuesday, wednesday = daily["buckets"]
    # Monday: 4 released (100-400 ms), 1 failed, 4 held (100 ms), 3 of them decided that day (an escalation stays).
    assert (monday["volume"], monday["held"], monday["failed"], monday["backlog"]) == (9, 4, 1, 1)
    assert monday["latency_ms_mean"] == (100 + 200 + 300 + 400 + 4 * 100) / 8
    assert (tuesday["volume"], tuesday["held"], tuesday["failed"], tuesday["backlog"]) == (2, 1, 1, 1)  # decided
    assert (wednesday["volume"], wednesday["backlog"], wednesday["latency_ms_mean"]) == (1, 2, 100)
    assert hourly["bucket"] == "hour"
    assert [(b["start"][11:16], b["volume"], b["held"], b["backlog"]) for b in hourly["buckets"]] == [
        ("09:00", 5, 0, 0), ("10:00", 4, 4, 1), ("11:00", 0, 0, 1)]  # fmt: skip
    assert hourly["buckets"][2]["latency_ms_mean"] is None
    table = list(csv.DictReader(io.StringIO(sheet.text)))
    assert [row["backlog"] for row in table] == ["1", "1", "2"] and table[0]["latency_ms_mean"] == "175.0"


def test_only_an_insights_key_reads_it(insights: tuple[TestClient, dict[str, str]], api_key: str) -> None:
    client, _ = insights
    with client:
        anonymous = client.get("/admin/insights/summary")
        chat_key = client.get("/admin/insights/summary", headers={"Authorization": f"Bearer {api_key}"})
    assert anonymous.status_code == 401 and chat_key.status_code == 403
    assert "--role insights" in chat_key.json()["error"]["message"]


def test_the_threshold_simulator_reads_the_cost_of_a_band_off_the_history(
    app: FastAPI, database_url: str, clock: factories.ManualClock
) -> None:
    factories.seed_scores(database_url)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    with TestClient(app) as client:
        found = client.get(
            "/admin/insights/threshold", params=factories.WEEK | {"release": "0.6"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()  # fmt: skip
    assert found["seconds_per_decision"] == 30 and found["decisions_timed"] == 7
    proposed = found["proposed"]
    assert (proposed["exchanges"], proposed["held"], proposed["released"]) == (10, 6, 4)
    assert proposed["review_rate"] == 0.6 and proposed["agent_hours"] == pytest.approx(6 * 30 / 3600)
    # Released at 0.6: the edit at 0.65 is wrong, 0.75 and 0.85 right, the audit at 0.95 right and weighs 2.
    assert proposed["labels_released"] == 4 and proposed["escaped_error_rate"] == pytest.approx(1 / 5)
    assert proposed["expected_escaped_errors"] == pytest.approx(4 / 5)
    assert 1 / 5 < proposed["escaped_error_upper"] < 1
    current = found["current"]  # the bundled policy releases from 0.92: only the audited 0.95, which was right
    assert current["release_min"] == 0.92 and current["held"] == 9 and current["escaped_error_rate"] == 0


def test_the_simulation_is_a_csv_and_its_policy_a_file_to_deploy(
    app: FastAPI, database_url: str, clock: factories.ManualClock
) -> None:
    factories.seed_scores(database_url)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    headers = {"Authorization": f"Bearer {key}"}
    params = factories.WEEK | {"release": "0.6"}
    with TestClient(app) as client:
        found = client.get("/admin/insights/threshold", params=params, headers=headers).json()
        sheet = client.get("/admin/insights/threshold", params=params | {"format": "csv"}, headers=headers)
        written = client.get("/admin/insights/threshold", params=params | {"format": "yaml"}, headers=headers)
        grouped = client.get("/admin/insights/threshold", params=params | {"format": "yaml", "model": "support-bot"},
                             headers=headers)  # fmt: skip
    rows = {row["figure"]: row for row in csv.DictReader(io.StringIO(sheet.text))}
    for name in ("review_rate", "held", "agent_hours", "escaped_error_rate", "expected_escaped_errors"):
        assert float(rows[name]["proposed"]) == pytest.approx(found["proposed"][name]), name
        assert float(rows[name]["current"]) == pytest.approx(found["current"][name]), name
    assert float(rows["seconds_per_decision"]["proposed"]) == 30
    assert written.status_code == 200 and "policy-release-0.6.yaml" in written.headers["content-disposition"]
    moved = policy.parse(written.text, "<downloaded>")
    assert moved.spec.version.endswith("+release-0.6") and moved.releases(0.6, None) and not moved.releases(0.59, None)
    assert written.text.startswith("# Written by the admin API's threshold simulator")
    # The bundled policy gives no model bands of its own: said, not a file with the pooled bands moved.
    assert grouped.status_code == 400 and "no bands of its own" in grouped.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "param"), [({}, "release"), ({"release": "1.5"}, "release"), ({"release": "x"}, "release"),
                          ({"release": "0.5", "api_key": "1"}, "api_key"),
                          ({"release": "0.5", "format": "xml"}, "format")],
)  # fmt: skip
def test_a_bad_simulation_is_a_400_that_names_it(
    app: FastAPI, database_url: str, params: dict[str, str], param: str
) -> None:
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    with TestClient(app) as client:
        sent = client.get("/admin/insights/threshold", params=params, headers={"Authorization": f"Bearer {key}"})
    assert sent.status_code == 400 and sent.json()["error"]["param"] == param, sent.text


def seed_two_weeks(database_url: str) -> None:
    """Week of 2 Nov (policy v1): 10 answered, 6 held; 4 audits decided, one of them overridden. Week of 9 Nov
    (policy v2, calibrator cal-3): 10 answered and 1 failed, 3 held; 4 audits, all approved, and one still open."""
    agent = factories.make_agent(database_url, "ada")
    with factories.sync_session(database_url) as session:
        key = factories.key_named(session, "web")
        rows: list[Any] = []
        weeks = [(factories.WEEK_DAY, "v1", "default", 6, [Action.APPROVE] * 3 + [Action.OVERRIDE]),
                 (factories.WEEK_DAY + timedelta(days=7), "v2", "cal-3", 3, [Action.APPROVE] * 4 + [None])]  # fmt: skip
        for monday, version, calibrator, held, audits in weeks:
            for number in range(10):
                at = monday + timedelta(hours=number)
                route = Route.HOLD if number < held else Route.RELEASE
                status = ExchangeStatus.HELD if route == Route.HOLD else ExchangeStatus.RELEASED
                exchange = Exchange(request_id="r", api_key_id=key, model="support-bot", upstream_model="m",
                                    request={}, response={}, signals={}, policy_version=version, route=route,
                                    status=status, calibrator=calibrator, created_at=at)  # fmt: skip
                rows.append(exchange)
                audit = number - held
                if 0 <= audit < len(audits):
                    action = audits[audit]
                    review = Review(exchange_id=exchange.id, api_key_id=key, tier="agent", kind=ReviewKind.AUDIT,
                                    audit_rate=0.5, created_at=at, deadline_at=at,
                                    status=ReviewStatus.DECIDED if action else ReviewStatus.OPEN)  # fmt: skip
                    rows.append(review)
                    if action:
                        rows.append(Decision(review_id=review.id, agent_id=agent.id, action=action))
        failed = Exchange(request_id="r", api_key_id=key, model="support-bot", upstream_model="m", request={},
                          response={}, signals={}, policy_version="v2", route=Route.NONE, status=ExchangeStatus.FAILED,
                          created_at=factories.WEEK_DAY + timedelta(days=8))  # fmt: skip
        rows.append(failed)
        factories.add_in_order(session, rows)


def test_the_loop_health_shows_each_week_with_its_escaped_error_interval(app: FastAPI, database_url: str) -> None:
    seed_two_weeks(database_url)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    period = {"since": "2026-11-02", "until": "2026-11-16"}
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        found = client.get("/admin/insights/loop", params=period, headers=headers).json()
        sent = client.get("/admin/insights/loop", params=period | {"format": "csv"}, headers=headers)
    first, second = found["weeks"]
    assert first["week"] == "2026-11-02" and second["week"] == "2026-11-09"
    assert (first["answered"], first["held"], first["review_rate"]) == (10, 6, 0.6)
    assert (second["answered"], second["held"], second["review_rate"]) == (10, 3, 0.3)
    assert (first["audited"], first["audit_errors"], first["escaped_error_rate"]) == (4, 1, 0.25)
    assert (second["audited"], second["audit_errors"], second["escaped_error_rate"]) == (4, 0, 0.0)
    assert first["escaped_error_low"] < 0.25 < first["escaped_error_high"] < 1  # Wilson: wide on 4 audits
    assert second["escaped_error_low"] == 0 and 0.4 < second["escaped_error_high"] < 0.6  # 0 of 4: still up to ~49%
    assert first["policies"] == ["v1"] and second["policies"] == ["v2"] and second["calibrators"] == ["cal-3"]
    table = list(csv.DictReader(io.StringIO(sent.text)))
    assert [row["week"] for row in table] == ["2026-11-02", "2026-11-09"] and table[1]["review_rate"] == "0.3"


def seed_reviewers(database_url: str) -> None:
    """Twenty held answers of 500 characters at confidence 0.45 in tier `agent`, all on 2 Nov between 10:00 and
    10:59. bob approves his ten, each 2 s after claiming it (reading 500 characters takes 20 s); cy decides hers a
    minute after claiming each: 3 approvals, 4 edits, 3 overrides."""
    bob, cy = factories.make_agent(database_url, "bob"), factories.make_agent(database_url, "cy")
    work = [(bob, Action.APPROVE, 2)] * 10 + [(cy, Action.APPROVE, 60)] * 3 + [(cy, Action.EDIT, 60)] * 4
    work += [(cy, Action.OVERRIDE, 60)] * 3
    with factories.sync_session(database_url) as session:
        key = factories.key_named(session, "web")
        rows: list[Any] = []
        for number, (agent, action, seconds) in enumerate(work):
            at = factories.WEEK_DAY + timedelta(hours=1, minutes=number * 2)
            exchange = Exchange(request_id="r", api_key_id=key, model="support-bot", upstream_model="m", request={},
                                response={}, signals={}, policy_version="p", route=Route.HOLD, tier="agent",
                                status=ExchangeStatus.APPROVED, confidence=0.45, candidate_text="x" * 500,
                                created_at=at)  # fmt: skip
            review = Review(exchange_id=exchange.id, api_key_id=key, tier="agent", created_at=at, deadline_at=at,
                            status=ReviewStatus.DECIDED, decided_at=at + timedelta(seconds=90))  # fmt: skip
            decided = at + timedelta(seconds=90)
            rows += [exchange, review,
                     ReviewEvent(review_id=review.id, kind=EventKind.CLAIMED, agent_id=agent.id,
                                 at=decided - timedelta(seconds=seconds)),
                     Decision(review_id=review.id, agent_id=agent.id, action=action, created_at=decided)]  # fmt: skip
        factories.add_in_order(session, rows)


def test_reviewer_quality_flags_the_rubber_stamp_with_its_evidence(app: FastAPI, database_url: str) -> None:
    seed_reviewers(database_url)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        found = client.get("/admin/insights/reviewers", params=factories.WEEK, headers=headers).json()
        sent = client.get("/admin/insights/reviewers", params=factories.WEEK | {"format": "csv"}, headers=headers)
    bob, cy = found["agents"]
    assert (bob["agent"], bob["decisions"], bob["per_hour"], bob["seconds_per_decision"]) == ("bob", 10, 10, 2)
    assert bob["approval_rate"] == 1 and bob["team_approval_rate"] == pytest.approx(13 / 20)
    assert [flag["flag"] for flag in bob["flags"]] == ["fast_approvals", "approves_above_team"]
    assert (
        "10 of 10 timed approvals came faster than the answer takes to read (median 2 s for 500 characters)"
        in (bob["flags"][0]["evidence"])
    )
    assert (cy["approval_rate"], cy["edit_rate"], cy["override_rate"]) == (0.3, 0.4, 0.3)
    assert cy["seconds_per_decision"] == 60 and cy["per_hour"] == 10 and cy["flags"] == []
    table = list(csv.DictReader(io.StringIO(sent.text)))
    assert table[0]["agent"] == "bob" and "faster than the answer takes to read" in table[0]["flags"]
    assert table[1]["flags"] == ""


def test_drift_compares_the_period_with_what_its_calibrator_was_fitted_on(app: FastAPI, database_url: str) -> None:
    """The week's 10 answers, scored by cal-<id>, all at 0.85; the calibrator was fitted on labels whose confidences
    were 0.25 (weight 3, one right) and 0.85 (weight 1, right): 75% of its traffic below 0.3."""
    labels = Labels(raw=[0.2, 0.2, 0.8], rows=[[], [], []], labels=[1, 0, 1], weights=[1.0, 2.0, 1.0],
                    audited=[False, True, False], groups=["pooled"] * 3)  # fmt: skip
    fit = drift.at_fit([0.25, 0.25, 0.85], labels)
    assert fit[2] == {"share": 0.75, "right": pytest.approx(1 / 3)} and fit[8] == {"share": 0.25, "right": 1.0}
    with factories.sync_session(database_url) as session:
        calibration = Calibration(method="isotonic", params={}, metrics={"bands_at_fit": fit}, labels=3)
        session.add(calibration)
        session.flush()
        version = calibration.version
        key = factories.key_named(session, "web")
        rows = [Exchange(request_id="r", api_key_id=key, model="support-bot", upstream_model="m", request={},
                         response={}, signals={}, policy_version="p", route=Route.RELEASE,
                         status=ExchangeStatus.RELEASED, confidence=0.85, calibrator=version,
                         created_at=factories.WEEK_DAY + timedelta(minutes=number))
                for number in range(10)]  # fmt: skip
        factories.add_in_order(session, rows)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    with TestClient(app) as client:
        found = client.get("/admin/insights/drift", params=factories.WEEK,
                           headers={"Authorization": f"Bearer {key}"}).json()  # fmt: skip
    assert found["calibrator"] == version and found["shift_from_fit"] == pytest.approx(0.75)
    assert found["bands"][8]["share_at_fit"] == 0.25 and found["bands"][2]["right_at_fit"] == pytest.approx(1 / 3)
    moved = [warning for warning in found["warnings"] if "since " + version in warning]
    assert len(moved) == 1 and moved[0].startswith(f"The answers' confidences have moved since {version}")


def test_drift_warns_when_the_confidence_no_longer_means_what_it_says(app: FastAPI, database_url: str) -> None:
    """This week: 20 held answers scored 0.95, of which agents approved 10 and overrode 10. The week before: 20
    answers scored 0.15, none reviewed."""
    agent = factories.make_agent(database_url, "ada")
    with factories.sync_session(database_url) as session:
        key = factories.key_named(session, "web")
        rows: list[Any] = []
        for number in range(40):
            this_week = number < 20
            at = factories.WEEK_DAY + timedelta(minutes=number) - timedelta(days=0 if this_week else 7)
            exchange = Exchange(request_id="r", api_key_id=key, model="support-bot", upstream_model="m", request={},
                                response={}, signals={}, policy_version="p", route=Route.HOLD, tier="agent",
                                status=ExchangeStatus.HELD, confidence=0.95 if this_week else 0.15,
                                created_at=at)  # fmt: skip
            rows.append(exchange)
            if this_week:
                review = Review(exchange_id=exchange.id, api_key_id=key, tier="agent", created_at=at,
                                deadline_at=at, status=ReviewStatus.DECIDED)  # fmt: skip
                action = Action.APPROVE if number % 2 else Action.OVERRIDE
                rows += [review, Decision(review_id=review.id, agent_id=agent.id, action=action)]
        factories.add_in_order(session, rows)
    key = factories.make_api_key(database_url, "dashboard", role=KeyRole.INSIGHTS)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        found = client.get("/admin/insights/drift", params=factories.WEEK, headers=headers).json()
        sent = client.get("/admin/insights/drift", params=factories.WEEK | {"format": "csv"}, headers=headers)
    # Then two answers of the week at 0.55: one released and audited at rate 0.5 (approved: it weighs 2), one held
    # and overridden (it weighs 1).
    with factories.sync_session(database_url) as session:
        rows = []
        for audited, action in ((True, Action.APPROVE), (False, Action.OVERRIDE)):
            at = factories.WEEK_DAY + timedelta(hours=2)
            exchange = Exchange(request_id="r", api_key_id=1, model="support-bot", upstream_model="m", request={},
                                response={}, signals={}, policy_version="p", route=Route.RELEASE, tier=None,
                                status=ExchangeStatus.RELEASED, confidence=0.55, created_at=at)  # fmt: skip
            review = Review(exchange_id=exchange.id, api_key_id=1, tier="agent", created_at=at, deadline_at=at,
                            status=ReviewStatus.DECIDED, kind=ReviewKind.AUDIT if audited else ReviewKind.HOLD,
                            audit_rate=0.5 if audited else None)  # fmt: skip
            rows += [exchange, review, Decision(review_id=review.id, agent_id=agent.id, action=action)]
        factories.add_in_order(session, rows)
    with TestClient(app) as client:
        weighed = client.get("/admin/insights/drift", params=factories.WEEK, headers=headers).json()
    middle = weighed["bands"][5]
    assert middle["observed"] == pytest.approx(2 / 3) and middle["labels"] == pytest.approx(1.8)  # (2+1)^2 / (4+1)
    assert middle["promised"] == pytest.approx(0.55) and middle["share"] == pytest.approx(2 / 22)
    top = found["bands"][9]
    assert top["band"] == "0.9-1.0" and top["share"] == 1 and top["share_before"] == 0
    assert top["labels"] == 20 and top["observed"] == 0.5 and top["promised"] == pytest.approx(0.95)
    assert top["observed_low"] < 0.5 < top["observed_high"] < 0.95
    assert found["shift"] == 1
    calibration, shift = found["warnings"]
    assert calibration.startswith("Answers scored 0.9-1.0 were right 50% of the time (20 labels")
    assert "less often than their confidence of 95% says" in calibration and "hitl calibrate" in calibration
    assert shift.startswith("The answers' confidences have shifted: 100% of them")
    table = list(csv.DictReader(io.StringIO(sent.text)))
    assert len(table) == 10 and table[9]["band"] == "0.9-1.0" and table[9]["observed"] == "0.5"
