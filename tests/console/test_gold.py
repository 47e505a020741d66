"""The console's side of gold items: an admin marks a decided review gold from its page and stops serving it; an
agent sees no sign of it; a gold copy served to an agent looks like any held review; the Insights page shows the
gold scores and the second reviews' kappa."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.models import GoldItem, Review, Role, Shadow
from tests import factories


def test_an_admin_marks_a_decided_review_gold_and_an_agent_never_sees_it(
    app: FastAPI, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    with TestClient(app) as client:
        review_id = factories.held(client, upstream, api_key)["review_id"]
        token = factories.console_login(client, "ada", "correct horse")
        client.post(f"/console/reviews/{review_id}/decide", data={"action": "edit", "text": "Paris.",
                                                                   "csrftoken": token})  # fmt: skip
        agents_view = client.get(f"/console/reviews/{review_id}")
        refused = client.post(f"/console/reviews/{review_id}/gold", data={"csrftoken": token}, follow_redirects=False)
        token = factories.console_login(client, "root", "correct horse")
        before = client.get(f"/console/reviews/{review_id}")
        marked = client.post(f"/console/reviews/{review_id}/gold", data={"csrftoken": token}, follow_redirects=False)
        after = client.get(f"/console/reviews/{review_id}")
        removed = client.post(f"/console/reviews/{review_id}/gold/remove", data={"csrftoken": token},
                              follow_redirects=False)  # fmt: skip
        again = client.post(f"/console/reviews/{review_id}/gold/remove", data={"csrftoken": token})
    assert 'id="gold"' not in agents_view.text and refused.status_code == 403
    assert "Mark as gold" in before.text.split('id="gold"')[1]
    assert marked.status_code == 303 and "Stop serving it" in after.text.split('id="gold"')[1]
    assert removed.status_code == 303 and again.status_code == 404
    with factories.sync_session(database_url) as session:
        item = session.exec(select(GoldItem)).one()
    assert item.review_id == review_id and not item.active


def test_a_gold_copy_in_an_agents_queue_looks_like_any_held_review(
    make_settings, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    from gateway.app import create_app
    from gateway.settings import QualitySettings

    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    factories.make_agent(database_url, "bob", "correct horse", Role.AGENT)
    factories.make_agent(database_url, "root", "correct horse", Role.ADMIN)
    app = create_app(make_settings(quality=QualitySettings(gold_share=0.5)))
    with TestClient(app) as client:
        golden = factories.held(client, upstream, api_key)["review_id"]
        token = factories.console_login(client, "ada", "correct horse")
        client.post(f"/console/reviews/{golden}/decide", data={"action": "edit", "text": "Paris.", "csrftoken": token})
        token = factories.console_login(client, "root", "correct horse")
        client.post(f"/console/reviews/{golden}/gold", data={"csrftoken": token})
        with factories.sync_session(database_url) as session:
            assert not session.exec(select(Review).where(Review.shadow == Shadow.GOLD)).all()
        # bob decides held answers until a draw serves him the gold item (each decision: a one-in-two chance)
        token = factories.console_login(client, "bob", "correct horse")
        served = None
        for _ in range(40):
            review_id = factories.held(client, upstream, api_key)["review_id"]
            client.post(f"/console/reviews/{review_id}/decide", data={"action": "approve", "csrftoken": token})
            with factories.sync_session(database_url) as session:
                served = session.exec(select(Review).where(Review.shadow == Shadow.GOLD)).first()
            if served is not None:
                break
        assert served is not None, "forty draws at one in two served nothing"
        queue = client.get("/console/?tier=agent")
        page = client.get(f"/console/reviews/{served.id}")
    assert served.id in queue.text and "Capital of France?" in page.text and "Lyon." in page.text
    assert "gold" not in page.text.lower().replace("golden", "")  # nothing on the page gives it away
