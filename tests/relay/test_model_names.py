"""Model names as apps send them: aliases, and a default upstream for any name not declared."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Exchange
from gateway.settings import Settings, UpstreamSettings
from tests import factories
from tests.factories import MODEL, UPSTREAM


def upstreams(*, aliases: list[str] | None = None) -> list[UpstreamSettings]:
    return [UpstreamSettings(name=MODEL, model="gpt-4o-mini", api_base=UPSTREAM, aliases=aliases or [])]


def ask(client: TestClient, key: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    return client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}).status_code


def test_an_alias_reaches_its_upstream_and_is_listed(
    make_settings: Callable[..., Settings], api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer()
    with TestClient(create_app(make_settings(upstreams=upstreams(aliases=["gpt-4o"])))) as client:
        assert ask(client, api_key, "gpt-4o") == 200
        assert upstream.sent()["model"] == "gpt-4o-mini"
        assert ask(client, api_key, "gpt-5") == 404
        listed = client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"}).json()["data"]
        assert [card["id"] for card in listed] == [MODEL, "gpt-4o"]


def test_the_default_upstream_answers_any_other_name_and_the_exchange_keeps_it(
    make_settings: Callable[..., Settings], api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer()
    with TestClient(create_app(make_settings(upstreams=upstreams(), default_upstream=MODEL))) as client:
        assert ask(client, api_key, "gpt-4o") == 200
        card = client.get("/v1/models/gpt-4o", headers={"Authorization": f"Bearer {api_key}"})
        assert card.status_code == 200 and card.json()["id"] == "gpt-4o"
    assert upstream.sent()["model"] == "gpt-4o-mini"
    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange)).one()
    assert exchange.model == "gpt-4o" and exchange.upstream_model == "gpt-4o-mini"


def test_ambiguous_names_and_an_unknown_default_are_refused(make_settings: Callable[..., Settings]) -> None:
    second = UpstreamSettings(name="other", api_base=UPSTREAM, aliases=[MODEL])
    with pytest.raises(ValidationError, match="declared by both 'support-bot' and 'other'"):
        make_settings(upstreams=[*upstreams(), second])
    with pytest.raises(ValidationError, match="default_upstream 'nope' is not one of the models offered"):
        make_settings(upstreams=upstreams(), default_upstream="nope")
