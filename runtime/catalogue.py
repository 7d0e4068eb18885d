"""The model catalogue: the providers and models a server serves, and what a submit's
``model`` / ``provider_id`` mean (SPEC §14). Pure: the file's text and the environment come in
as arguments (``load_catalogue`` is the one function that reads a file).

Built in, with no file: the providers ``openai`` (``openai-responses`` at ``OPENAI_BASE_URL``,
default ``https://api.openai.com/v1``, key in ``OPENAI_API_KEY``) and ``anthropic``
(``anthropic-messages`` at ``ANTHROPIC_BASE_URL``, default ``https://api.anthropic.com``, key
in ``ANTHROPIC_API_KEY``), and the models ``gpt-5-mini``, ``gpt-5-codex`` (reasoning),
``claude-haiku-4.5`` and ``claude-sonnet-4.5`` (thinking).

``cody.toml`` (``CODY_CONFIG``, default ``<data dir>/cody.toml``) adds to them, in this shape::

    [providers.local]                  # the provider id, usable as `local/<model name>`
    protocol = "openai-chat"           # openai-responses | anthropic-messages | openai-chat
    base_url = "http://127.0.0.1:8000/v1"   # requests go to {base_url}/chat/completions
    api_key_env = "LOCAL_API_KEY"      # optional: the variable holding its key (Bearer)
    headers = { "X-Team" = "core" }    # optional, sent on every request

    [models.qwen]                      # the model id clients send
    provider = "local"
    name = "qwen3-8b"                  # the provider's model name, sent on the wire
    reasoning = false                  # optional: ask for reasoning/thinking by default

Decisions:

- A table for a built-in id overrides it field by field: ``[providers.openai] base_url = …``
  keeps the protocol and key variable, ``[models.gpt-5-mini] reasoning = true`` the provider
  and name. A ``base_url`` in the file wins over ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``
  (the file is the more specific setting). ``api_key_env = ""`` means the provider needs no key
  (a local server); leaving it out of a new provider means the same.
- Unknown sections and fields are errors, not ignored (a typo would otherwise silently fall
  back to a default). Every error names the file, the line (tomllib's own for a syntax
  error; for a bad value, the line its key is on, found by ``_Lines``) and the field, as
  ``ValidationFailed`` with details ``{"file", "line", "field"}``.
- A submit's ``model`` is a catalogue id first, else ``<provider>/<provider's model name>``,
  sent as is; such a model asks for reasoning if a catalogue model of that provider and name
  does, else not (a model that does not reason may reject the parameter). With no ``model``,
  ``provider_id`` alone picks that provider's default model (the built-in ones', else the
  first model the file lists for it); with neither, ``default_model``.
- Keys are never held here: ``api_key`` reads a provider's variable from the environment it
  is given, when a request needs it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from runtime.errors import InvalidModel, ProviderNotConfigured, UnknownProvider, ValidationFailed

if TYPE_CHECKING:
    from runtime.config import RuntimeConfig

PROTOCOL_NAMES: tuple[str, ...] = ("openai-responses", "anthropic-messages", "openai-chat")
"""The wire protocols (actors/providers/protocols.py has their normalisers and builders)."""

KeyStatus = Literal["set", "missing", "not needed"]
Effort = Literal["low", "medium", "high"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PROVIDER_FIELDS = ("protocol", "base_url", "api_key_env", "headers")
_MODEL_FIELDS = ("provider", "name", "reasoning")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider: where its API is, which protocol it speaks, which variable holds its key."""

    id: str
    protocol: str
    base_url: str
    api_key_env: str | None
    """None: the provider needs no key."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Sent on every request (not shown in a repr: a header may carry a secret)."""
    builtin: bool = False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A catalogue model: the id clients send, and what it means on the wire."""

    id: str
    provider: str
    name: str
    """The provider's model name, sent on the wire."""
    reasoning: bool = False
    """Whether reasoning/thinking is requested by default."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a submit's ``model`` / ``provider_id`` resolved to."""

    provider: ProviderSpec
    model_id: str
    """The model as the Response shows it: the catalogue id, or ``<provider>/<name>``."""
    wire_name: str
    """The model name sent to the provider."""
    reasoning: bool


class ModelInfo(BaseModel):
    """One model this server serves, as ``GET /api/v2/models`` and ``cody models`` list it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """The id clients send as ``model``."""
    provider: str
    name: str
    """The provider's model name, sent on the wire."""
    protocol: str
    reasoning: bool
    """Whether reasoning/thinking is requested by default (a run may still ask for it)."""
    key: KeyStatus
    """Whether the provider's key is in the server's environment (never the key)."""


def reasoning_defaults(protocol: str, reasoning: bool, effort: Effort, budget: int
                       ) -> tuple[Effort | None, int | None]:
    """The ``(reasoning_effort, thinking_budget)`` a run gets when it asks for neither: the
    OpenAI protocols take an effort, Anthropic's a thinking budget, and only for a model whose
    catalogue entry asks for reasoning by default."""
    if not reasoning:
        return None, None
    if protocol == "anthropic-messages":
        return None, budget
    return effort, None


def builtin_providers(env: Mapping[str, str]) -> dict[str, ProviderSpec]:
    """The built-in providers, with the base URLs the official SDKs read from ``env``."""
    return {
        "openai": ProviderSpec("openai", "openai-responses",
                               env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                               "OPENAI_API_KEY", builtin=True),
        "anthropic": ProviderSpec("anthropic", "anthropic-messages",
                                  env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
                                  "ANTHROPIC_API_KEY", builtin=True),
    }


BUILTIN_MODELS: Mapping[str, ModelSpec] = {m.id: m for m in (
    ModelSpec("gpt-5-mini", "openai", "gpt-5-mini"),
    ModelSpec("gpt-5-codex", "openai", "gpt-5-codex", reasoning=True),
    ModelSpec("claude-haiku-4.5", "anthropic", "claude-haiku-4-5"),
    ModelSpec("claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5", reasoning=True),
)}
BUILTIN_DEFAULTS: Mapping[str, str] = {"openai": "gpt-5-mini", "anthropic": "claude-haiku-4.5"}
"""The model a run for a built-in provider gets when it names none."""
DEFAULT_MODEL = "gpt-5-mini"


@dataclass(frozen=True, slots=True)
class Catalogue:
    providers: Mapping[str, ProviderSpec]
    models: Mapping[str, ModelSpec]
    """In order: the built-in models, then the file's new ones."""
    source: str | None = None
    """The file it was read from (None: built-ins only)."""
    default_model: str = DEFAULT_MODEL

    # ------------------------------------------------------------------ resolution

    def resolve(self, model: str | None, provider_id: str | None = None) -> Resolved:
        """What a submit's ``model`` and ``provider_id`` mean.

        Raises:
            UnknownProvider: ``provider_id``, or the ``<provider>/`` of ``model``, is not a
                provider of this catalogue.
            InvalidModel: ``model`` is neither a catalogue id nor ``<provider>/<name>``, or
                it belongs to another provider than ``provider_id``.
        """
        if provider_id is not None and provider_id not in self.providers:
            raise UnknownProvider(f"unknown provider {provider_id!r}; known: "
                                  f"{', '.join(self.providers)}", details={"field": "provider_id"})
        if model is None:
            model = self._default_for(provider_id)
        entry = self.models.get(model)
        if entry is not None:
            if provider_id is not None and entry.provider != provider_id:
                raise InvalidModel(f"model {model!r} is served by provider {entry.provider!r}, "
                                   f"not {provider_id!r}", details={"field": "model"})
            return Resolved(self.providers[entry.provider], model, entry.name, entry.reasoning)
        prefix, slash, name = model.partition("/")
        if not slash:
            raise InvalidModel(f"unknown model {model!r}; known: {', '.join(self.models)}, or "
                               "<provider>/<the provider's model name>",
                               details={"field": "model"})
        if prefix not in self.providers:
            raise UnknownProvider(f"model {model!r}: unknown provider {prefix!r}; known: "
                                  f"{', '.join(self.providers)}", details={"field": "model"})
        if not name:
            raise InvalidModel(f"model {model!r}: no model name after {prefix + '/'!r}",
                               details={"field": "model"})
        if provider_id is not None and prefix != provider_id:
            raise InvalidModel(f"model {model!r} is served by provider {prefix!r}, not "
                               f"{provider_id!r}", details={"field": "model"})
        known = next((m for m in self.models.values() if m.provider == prefix
                      and m.name == name), None)
        return Resolved(self.providers[prefix], model, name,
                        known.reasoning if known is not None else False)

    def _default_for(self, provider_id: str | None) -> str:
        default = self.models.get(self.default_model)
        default_provider = (default.provider if default is not None
                            else self.default_model.partition("/")[0])
        if provider_id is None or provider_id == default_provider:
            return self.default_model
        builtin = BUILTIN_DEFAULTS.get(provider_id)
        if builtin is not None and builtin in self.models and \
                self.models[builtin].provider == provider_id:
            return builtin
        first = next((m.id for m in self.models.values() if m.provider == provider_id), None)
        if first is None:
            raise InvalidModel(f"provider {provider_id!r} has no model in the catalogue; name "
                               f"one as {provider_id + '/<model name>'!r}",
                               details={"field": "model"})
        return first

    # ------------------------------------------------------------------ listing and keys

    def listing(self, env: Mapping[str, str]) -> list[ModelInfo]:
        """Every catalogue model, in order, with its provider's protocol and key status."""
        return [ModelInfo(id=m.id, provider=m.provider, name=m.name,
                          protocol=self.providers[m.provider].protocol, reasoning=m.reasoning,
                          key=self.key_status(m.provider, env))
                for m in self.models.values()]

    def key_status(self, provider_id: str, env: Mapping[str, str]) -> KeyStatus:
        """Whether the provider's key is in ``env`` (for ``cody models``, never the key)."""
        var = self.providers[provider_id].api_key_env
        if var is None:
            return "not needed"
        return "set" if env.get(var) else "missing"

    def api_key(self, provider_id: str, env: Mapping[str, str]) -> str | None:
        """The provider's key from ``env`` (None for a provider that needs none).

        Raises:
            ProviderNotConfigured: the provider needs a key and its variable is not set.
        """
        var = self.providers[provider_id].api_key_env
        if var is None:
            return None
        key = env.get(var)
        if not key:
            raise ProviderNotConfigured(
                f"provider {provider_id!r} needs an API key in {var}, which is not set",
                details={"field": "provider_id", "provider": provider_id, "api_key_env": var})
        return key


# --------------------------------------------------------------------------- the file


def builtin_catalogue(env: Mapping[str, str], *, default_model: str = DEFAULT_MODEL
                      ) -> Catalogue:
    return Catalogue(builtin_providers(env), dict(BUILTIN_MODELS), None, default_model)


def load_catalogue(path: Path, env: Mapping[str, str], *, required: bool = False,
                   default_model: str = DEFAULT_MODEL) -> Catalogue:
    """The catalogue from ``path`` over the built-ins; built-ins only if there is no file and
    ``required`` is false (the default path need not exist; one the user named must).

    Raises:
        ValidationFailed: the file is missing (when required), unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ValidationFailed(f"{path}: no such file (CODY_CONFIG)",
                                   details={"file": str(path), "line": None,
                                            "field": None}) from None
        return builtin_catalogue(env, default_model=default_model)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"{path}: cannot read it: {exc}",
                               details={"file": str(path), "line": None, "field": None}) from exc
    return parse_catalogue(text, str(path), env, default_model=default_model)


def load_configured(config: RuntimeConfig) -> Catalogue:
    """The catalogue a runtime serves: ``config``'s file (``CODY_CONFIG``, else
    ``<data dir>/cody.toml`` if it exists) over the built-ins, with its default model, checked
    as a whole so that a mistake stops start-up rather than a run.

    Raises:
        ValidationFailed: the file is missing (when named), unreadable or malformed (naming
            file, line and field); ``CODY_DEFAULT_MODEL`` / ``CODY_DEFAULT_PROVIDER`` name no
            model this catalogue serves; ``CODY_EXEC_ENV_ALLOW`` passes a provider's key
            variable to ``exec`` commands.
    """
    env = config.provider_env()
    cat = load_catalogue(config.effective_config_path, env,
                         required=config.config_path is not None)
    setting, default = "CODY_DEFAULT_MODEL", config.default_model
    try:
        if default is None and config.default_provider is not None:
            setting = "CODY_DEFAULT_PROVIDER"
            default = cat.resolve(None, config.default_provider).model_id
        cat = replace(cat, default_model=default or DEFAULT_MODEL)
        cat.resolve(None)
    except (UnknownProvider, InvalidModel) as exc:
        raise ValidationFailed(f"{setting}: {exc.message}", details={"field": setting}) from None
    for spec in cat.providers.values():
        if spec.api_key_env is not None and spec.api_key_env in config.exec_env:
            raise ValidationFailed(f"CODY_EXEC_ENV_ALLOW: {spec.api_key_env} holds the key of "
                                   f"provider {spec.id!r}",
                                   details={"field": "CODY_EXEC_ENV_ALLOW"})
    return cat


def parse_catalogue(text: str, source: str, env: Mapping[str, str], *,
                    default_model: str = DEFAULT_MODEL) -> Catalogue:
    """The catalogue a ``cody.toml`` text describes, over the built-ins.

    Args:
        text: the file's text.
        source: its path, for error messages.
        env: the environment (for the built-in providers' base URLs).
        default_model: the model of a run that names neither model nor provider.

    Raises:
        ValidationFailed: the text is not TOML, or not in the catalogue's shape.
    """
    lines = _Lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(found.group(1)) if found else None
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise _invalid(source, line, lines.field_at(line), f"invalid TOML: {problem}") from None
    check = _Checker(source, lines)
    for section in data:
        if section not in ("providers", "models"):
            check.fail((section,), "unknown section (expected [providers.<id>] or "
                       "[models.<id>])")
    providers = builtin_providers(env)
    for pid, table in check.tables(data, "providers").items():
        providers[pid] = check.provider(pid, table, providers.get(pid))
    models = dict(BUILTIN_MODELS)
    for mid, table in check.tables(data, "models").items():
        models[mid] = check.model(mid, table, models.get(mid), providers)
    return Catalogue(providers, models, source, default_model)


def _invalid(source: str, line: int | None, field: str | None, problem: str
             ) -> ValidationFailed:
    where = f"{source}:{line}" if line else source
    return ValidationFailed(f"{where}: {field}: {problem}" if field else f"{where}: {problem}",
                            details={"file": source, "line": line, "field": field})


class _Checker:
    """Checks the parsed file's tables; every failure names the file, line and field."""

    def __init__(self, source: str, lines: _Lines) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: tuple[str, ...], problem: str) -> NoReturn:
        raise _invalid(self.source, self.lines.line_of(path), ".".join(path), problem)

    def tables(self, data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
        value = data.get(section, {})
        if not isinstance(value, dict):
            self.fail((section,), f"must be a table of [{section}.<id>] tables")
        pattern, allowed = ((_ID, "'.', '_' and '-'") if section == "providers" else
                            (_MODEL_ID, "'.', '_', '-', ':', '/', '@' and '+'"))
        for key, table in value.items():
            if not pattern.match(key):
                self.fail((section, key), f"an id is letters, digits, {allowed}, starting "
                          "with a letter or digit")
            if not isinstance(table, dict):
                self.fail((section, key), f"must be a table ([{section}.{key}])")
        return value

    def _fields(self, path: tuple[str, ...], table: dict[str, Any],
                allowed: tuple[str, ...]) -> None:
        for key, value in table.items():
            if key not in allowed:
                hint = ""
                if isinstance(value, dict):  # [models.claude-haiku-4.5] is models -> 4 -> 5
                    hint = (f"; an id with a '.' must be quoted: [{path[0]}."
                            f"\"{'.'.join((*path[1:], key))}\"]")
                self.fail((*path, key), f"unknown field (expected {', '.join(allowed)}){hint}")

    def _str(self, path: tuple[str, ...], value: object) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_toml_type(value)}")
        return value

    def provider(self, pid: str, table: dict[str, Any], base: ProviderSpec | None
                 ) -> ProviderSpec:
        path = ("providers", pid)
        self._fields(path, table, _PROVIDER_FIELDS)
        spec = base or ProviderSpec(pid, "", "", None)
        if "protocol" in table:
            protocol = self._str((*path, "protocol"), table["protocol"])
            if protocol not in PROTOCOL_NAMES:
                self.fail((*path, "protocol"), f"unknown protocol {protocol!r} (expected "
                          f"{' | '.join(PROTOCOL_NAMES)})")
            spec = replace(spec, protocol=protocol)
        elif base is None:
            self.fail((*path, "protocol"), f"required ({' | '.join(PROTOCOL_NAMES)})")
        if "base_url" in table:
            url = self._str((*path, "base_url"), table["base_url"])
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.fail((*path, "base_url"), f"{url!r} is not an http(s) URL")
            spec = replace(spec, base_url=url)
        elif base is None:
            self.fail((*path, "base_url"), "required (for example "
                      "\"http://127.0.0.1:8000/v1\")")
        if "api_key_env" in table:
            var = self._str((*path, "api_key_env"), table["api_key_env"])
            if var and not _ENV_NAME.match(var):
                self.fail((*path, "api_key_env"), f"{var!r} is not an environment variable "
                          "name (letters, digits and '_')")
            spec = replace(spec, api_key_env=var or None)
        if "headers" in table:
            spec = replace(spec, headers=self._headers((*path, "headers"), table["headers"]))
        return spec

    def _headers(self, path: tuple[str, ...], value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a table of header names to strings, not "
                      f"{_toml_type(value)}")
        headers: dict[str, str] = {}
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                self.fail((*path, name), "not a valid HTTP header name")
            text = self._str((*path, name), text)
            if "\r" in text or "\n" in text:
                self.fail((*path, name), "a header value cannot hold a line break")
            headers[name] = text
        return headers

    def model(self, mid: str, table: dict[str, Any], base: ModelSpec | None,
              providers: Mapping[str, ProviderSpec]) -> ModelSpec:
        path = ("models", mid)
        self._fields(path, table, _MODEL_FIELDS)
        spec = base or ModelSpec(mid, "", "")
        if "provider" in table:
            provider = self._str((*path, "provider"), table["provider"])
            if provider not in providers:
                self.fail((*path, "provider"), f"no provider {provider!r} (known: "
                          f"{', '.join(providers)})")
            spec = replace(spec, provider=provider)
        elif base is None:
            self.fail((*path, "provider"), "required (the id of a [providers.<id>] table, or "
                      "openai / anthropic)")
        if "name" in table:
            name = self._str((*path, "name"), table["name"])
            if not name.strip():
                self.fail((*path, "name"), "must not be empty")
            spec = replace(spec, name=name)
        elif base is None:
            self.fail((*path, "name"), "required (the provider's model name)")
        if "reasoning" in table:
            reasoning = table["reasoning"]
            if not isinstance(reasoning, bool):
                self.fail((*path, "reasoning"), f"must be true or false, not "
                          f"{_toml_type(reasoning)}")
            spec = replace(spec, reasoning=reasoning)
        return spec


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date or time"


_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\[\[?\s*({_DOTTED_KEY})\s*\]\]?\s*(?:#.*)?$")
_ASSIGNMENT = re.compile(rf"^({_DOTTED_KEY})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class _Lines:
    """Where each table and key of a TOML text is, by line, so that an error about a value
    can point at it (tomllib gives lines only for syntax errors). Best effort: a multi-line
    string or array that looks like a key is not told apart."""

    def __init__(self, text: str) -> None:
        self.paths: dict[tuple[str, ...], int] = {}
        self.at: dict[int, tuple[str, ...]] = {}  # line -> the table or key defined there
        table: tuple[str, ...] = ()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            header = _HEADER.match(line)
            if header:
                table = _split_key(header.group(1))
                path = table
            else:
                assignment = _ASSIGNMENT.match(line)
                if not assignment:
                    self.at[number] = table
                    continue
                path = table + _split_key(assignment.group(1))
            for end in range(1, len(path) + 1):  # a.b.c also says where a and a.b start
                self.paths.setdefault(path[:end], number)
            self.at[number] = path

    def line_of(self, path: tuple[str, ...]) -> int | None:
        """The line of ``path``, else of its nearest enclosing table or key."""
        for end in range(len(path), 0, -1):
            number = self.paths.get(path[:end])
            if number is not None:
                return number
        return None

    def field_at(self, line: int | None) -> str | None:
        path = self.at.get(line) if line is not None else None
        return ".".join(path) if path else None
