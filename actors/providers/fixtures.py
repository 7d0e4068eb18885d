"""The library of recorded provider streams in ``fixtures/`` (format: fixtures/README.md).

The recordings ship with the package (``fixtures/`` is installed as ``cody_fixtures``), so the
default library is found through ``importlib.resources``: from a checkout, an editable install
or a wheel alike.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES_PACKAGE = "cody_fixtures"


def default_fixtures_dir() -> Path:
    """The folder of the recordings shipped with the package.

    Raises:
        FileNotFoundError: the package is not installed as files on disk (in a zip, say).
    """
    root = importlib.resources.files(FIXTURES_PACKAGE)
    if not isinstance(root, Path) or not root.is_dir():
        raise FileNotFoundError(f"the {FIXTURES_PACKAGE} package is not a folder on disk "
                                f"({root!r}); set CODY_FIXTURES_DIR")
    return root
#: The protocol of a fixture whose manifest names none (those recorded before there were
#: several protocols per provider family); any other provider's is its own name.
BUILTIN_PROTOCOLS = {"openai": "openai-responses", "anthropic": "anthropic-messages"}


@dataclass(frozen=True, slots=True)
class ToolOutput:
    call_id: str
    output: str
    success: bool


@dataclass(frozen=True, slots=True)
class Exchange:
    """One model request of a turn and the body the provider streamed back."""

    request: dict[str, Any]
    stream: bytes
    tool_outputs: tuple[ToolOutput, ...]


@dataclass(frozen=True, slots=True)
class Fixture:
    name: str
    path: Path
    scenarios: tuple[str, ...]
    provider: str
    protocol: str
    """The wire protocol of its streams (actors/providers/protocols.py)."""
    model: str
    prompt: str
    default: bool
    wire_valid: bool
    after: str | None
    tools: tuple[str, ...]
    tool_timeout_s: float | None
    exchanges: tuple[Exchange, ...]
    expected: dict[str, Any]


def load_fixture(path: Path) -> Fixture:
    manifest = json.loads((path / "fixture.json").read_text())
    exchanges = tuple(
        Exchange(
            request=json.loads((path / ex["request"]).read_text()),
            stream=(path / ex["stream"]).read_bytes(),
            tool_outputs=tuple(ToolOutput(**t) for t in ex.get("tool_outputs", [])),
        )
        for ex in manifest["exchanges"]
    )
    return Fixture(
        name=manifest["name"],
        path=path,
        scenarios=tuple(manifest.get("scenarios", [])),
        provider=manifest["provider"],
        protocol=manifest.get("protocol") or BUILTIN_PROTOCOLS.get(manifest["provider"],
                                                                   manifest["provider"]),
        model=manifest["model"],
        prompt=manifest["prompt"],
        default=bool(manifest.get("default", False)),
        wire_valid=bool(manifest.get("wire_valid", True)),
        after=manifest.get("after"),
        tools=tuple(manifest.get("tools", [])),
        tool_timeout_s=manifest.get("tool_timeout_s"),
        exchanges=exchanges,
        expected=json.loads((path / "expected.json").read_text()),
    )


class FixtureLibrary:
    """All fixtures, indexed for the replay provider's choice by (provider, model, prompt)."""

    def __init__(self, root: Path | None = None) -> None:
        root = root if root is not None else default_fixtures_dir()
        self.root = root
        self.fixtures: dict[tuple[str, str], Fixture] = {}
        self._by_prompt: dict[tuple[str, str, str], Fixture] = {}
        self._defaults: dict[tuple[str, str], Fixture] = {}
        self._by_wire: dict[tuple[str, str], str] = {}
        self._any_model: dict[tuple[str, str], Fixture] = {}
        self._fallback: dict[str, Fixture] = {}
        for manifest in sorted(root.glob("*/*/fixture.json")):
            fx = load_fixture(manifest.parent)
            self.fixtures[(fx.provider, fx.name)] = fx
            if fx.exchanges:
                wire = fx.exchanges[0].request.get("model")
                self._by_wire.setdefault((fx.provider, str(wire)), fx.model)
            if fx.after is None:
                self._any_model.setdefault((fx.provider, fx.prompt), fx)
            if fx.default and (fx.provider not in self._fallback or
                               fx.name == "simple_message"):
                self._fallback[fx.provider] = fx
            self._by_prompt.setdefault((fx.provider, fx.model, fx.prompt), fx)
            if fx.default:
                self._defaults[(fx.provider, fx.model)] = fx

    def get(self, provider: str, name: str) -> Fixture:
        return self.fixtures[(provider, name)]

    def select(self, provider: str, model: str, prompt: str, wire_model: str | None = None
               ) -> Fixture | None:
        """The fixture recorded for this prompt, else that provider and model's default.

        ``model`` is Cody's model id. A model with no recordings of its own (one named
        ``<provider>/<name>``, or a catalogue model of the file) plays those of the model
        recorded under the same wire name (``wire_model``, the name the request sends), else
        the provider's recording of this prompt on any model, else the provider's default
        (its ``simple_message``), so that a replay server answers ``openai/gpt-4.1`` too. None
        only for a provider with no recordings at all."""
        found = self._by_prompt.get((provider, model, prompt)) or self._defaults.get(
            (provider, model))
        if found is not None:
            return found
        if wire_model is not None:
            recorded = self._by_wire.get((provider, wire_model))
            if recorded is not None and recorded != model:
                return self.select(provider, recorded, prompt)
        return self._any_model.get((provider, prompt)) or self._fallback.get(provider)

    def __iter__(self) -> Iterator[Fixture]:
        return iter(self.fixtures.values())
