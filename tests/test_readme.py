"""The README's settings tables list exactly the fields `Settings` has."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from gateway.settings import Settings, UpstreamSettings

README = (Path(__file__).parents[1] / "README.md").read_text()


def env_names(model: type[BaseModel], prefix: str = "HITL_") -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def test_settings_table_matches_settings() -> None:
    documented = set(re.findall(r"^\| `(HITL_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert documented == env_names(Settings) | {"HITL_CONFIG"}


def test_upstream_table_matches_upstream_settings() -> None:
    table = README.split("Each entry of `upstreams`:")[1].split("\n\n")[1]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == set(UpstreamSettings.model_fields)
