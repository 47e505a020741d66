"""Prompt templates shipped in `prompts/` (installed as `gateway.prompts`), versioned with the code.

Each file starts with a `version: ...` line; the rest is the template. The version is stored with
whatever the template produced, so a changed wording can be told apart in the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files


@dataclass(frozen=True)
class Template:
    name: str
    version: str
    text: str

    def render(self, **values: str) -> str:
        """Fill `{name}` placeholders; braces inside the values are left as they are."""
        return self.text.format(**values)


def _parse(name: str, raw: str) -> Template:
    first, _, rest = raw.partition("\n")
    if not first.startswith("version:"):
        raise ValueError(f"prompt {name!r} must start with a 'version: ...' line")
    return Template(name=name, version=first.removeprefix("version:").strip(), text=rest.strip())


class Prompts:
    def __init__(self) -> None:
        self._cache: dict[str, Template] = {}

    def get(self, name: str) -> Template:
        if name not in self._cache:
            raw = (files("gateway.prompts") / f"{name}.txt").read_text(encoding="utf-8")
            self._cache[name] = _parse(name, raw)
        return self._cache[name]


@dataclass(frozen=True)
class Canned:
    title: str
    text: str


def canned_responses() -> tuple[str, list[Canned]]:
    """The canned override answers kept in `prompts/canned_responses.yaml`, with their version."""
    import yaml

    data = yaml.safe_load((files("gateway.prompts") / "canned_responses.yaml").read_text(encoding="utf-8"))
    return str(data["version"]), [Canned(str(item["title"]), str(item["text"])) for item in data["responses"]]
