"""Settings from the environment and from a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings


def test_environment_and_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_DATABASE_URL", "postgresql://hitl@db/hitl")
    monkeypatch.setenv("HITL_HOLD__DEFAULT_WAIT", "7.5")
    monkeypatch.setenv(
        "HITL_UPSTREAMS",
        '[{"name": "support-bot", "api_base": "http://127.0.0.1:8080/v1", "model": "qwen", "api_key": "sk-x"}]',
    )
    settings = Settings()
    assert settings.database_url == "postgresql://hitl@db/hitl"
    assert settings.hold.default_wait == 7.5
    [upstream] = settings.upstreams
    assert (upstream.name, upstream.provider, upstream.model) == ("support-bot", "openai", "qwen")
    assert "sk-x" not in repr(settings)


def test_toml_config_file_with_environment_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hitl.toml"
    config.write_text(
        'database_url = "sqlite:///from-file.db"\nport = 9000\n'
        '[[upstreams]]\nname = "claude"\nprovider = "litellm"\nmodel = "anthropic/claude-sonnet-4"\n'
    )
    monkeypatch.setenv("HITL_CONFIG", str(config))
    monkeypatch.setenv("HITL_PORT", "9001")
    settings = Settings()
    assert settings.database_url == "sqlite:///from-file.db" and settings.port == 9001
    assert settings.upstreams[0].provider == "litellm" and settings.upstreams[0].model == "anthropic/claude-sonnet-4"


def test_openai_upstream_needs_a_base_url() -> None:
    with pytest.raises(ValidationError, match="needs api_base"):
        Settings(upstreams=[{"name": "x"}])  # type: ignore[list-item]


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HITL_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="HITL_CONFIG"):
        Settings()
