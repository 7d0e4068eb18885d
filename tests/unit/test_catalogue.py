"""The model catalogue: built-ins, ``cody.toml`` in the issue's shape, errors naming file, line
and field, ``<provider>/<model>`` routing, keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.catalogue import (
    PROTOCOL_NAMES,
    Catalogue,
    ModelSpec,
    ProviderSpec,
    builtin_catalogue,
    load_catalogue,
    parse_catalogue,
)
from runtime.errors import InvalidModel, ProviderNotConfigured, UnknownProvider, ValidationFailed

#: The file of issue 13, verbatim.
ISSUE_FILE = '''\
[providers.local]                  # the provider id, usable as `local/<model name>`
protocol = "openai-chat"           # openai-responses | anthropic-messages | openai-chat
base_url = "http://127.0.0.1:8000/v1"   # requests go to {base_url}/chat/completions
api_key_env = "LOCAL_API_KEY"      # optional: the variable holding its key (Bearer)
headers = { "X-Team" = "core" }    # optional, sent on every request

[models.qwen]                      # the model id clients send
provider = "local"
name = "qwen3-8b"                  # the provider's model name, sent on the wire
reasoning = false                  # optional: ask for reasoning/thinking by default
'''


def parse(text: str, env: dict[str, str] | None = None) -> Catalogue:
    return parse_catalogue(text, "/srv/cody/cody.toml", env or {})


def failure(text: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse(text)
    return info.value


# --------------------------------------------------------------------------- built-ins


def test_built_ins_need_no_file(tmp_path: Path) -> None:
    cat = load_catalogue(tmp_path / "cody.toml", {})
    assert cat == builtin_catalogue({})
    assert cat.source is None
    assert list(cat.providers) == ["openai", "anthropic"]
    assert cat.providers["openai"] == ProviderSpec(
        "openai", "openai-responses", "https://api.openai.com/v1", "OPENAI_API_KEY",
        builtin=True)
    assert cat.providers["anthropic"] == ProviderSpec(
        "anthropic", "anthropic-messages", "https://api.anthropic.com", "ANTHROPIC_API_KEY",
        builtin=True)
    assert list(cat.models) == ["gpt-5-mini", "gpt-5-codex", "claude-haiku-4.5",
                                "claude-sonnet-4.5"]


def test_built_in_base_urls_come_from_the_sdk_variables() -> None:
    cat = builtin_catalogue({"OPENAI_BASE_URL": "http://gw/v1",
                             "ANTHROPIC_BASE_URL": "http://gw2"})
    assert cat.providers["openai"].base_url == "http://gw/v1"
    assert cat.providers["anthropic"].base_url == "http://gw2"


def test_the_protocol_names_are_those_of_the_registry() -> None:
    from actors.providers.protocols import PROTOCOLS

    assert tuple(PROTOCOLS) == PROTOCOL_NAMES


# --------------------------------------------------------------------------- a good file


def test_the_issues_file() -> None:
    cat = parse(ISSUE_FILE)
    assert cat.source == "/srv/cody/cody.toml"
    local = cat.providers["local"]
    assert local == ProviderSpec("local", "openai-chat", "http://127.0.0.1:8000/v1",
                                 "LOCAL_API_KEY", {"X-Team": "core"})
    assert cat.models["qwen"] == ModelSpec("qwen", "local", "qwen3-8b", reasoning=False)
    assert list(cat.providers) == ["openai", "anthropic", "local"]
    assert list(cat.models)[-1] == "qwen" and len(cat.models) == 5
    assert "core" not in repr(local)  # header values are not shown


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cody.toml"
    path.write_text(ISSUE_FILE)
    cat = load_catalogue(path, {})
    assert cat.source == str(path) and "qwen" in cat.models


def test_optional_fields() -> None:
    cat = parse('[providers.lm]\nprotocol = "openai-chat"\nbase_url = "http://h:1234/v1"\n'
                '[models.m]\nprovider = "lm"\nname = "m-1"\n')
    assert cat.providers["lm"].api_key_env is None and cat.providers["lm"].headers == {}
    assert cat.models["m"].reasoning is False


def test_built_ins_are_overridden_field_by_field() -> None:
    cat = parse('[providers.openai]\nbase_url = "https://gateway.example/v1"\n'
                'headers = { "X-Team" = "core" }\n'
                '[providers.anthropic]\napi_key_env = "TEAM_ANTHROPIC_KEY"\n'
                '[models.gpt-5-mini]\nreasoning = true\n'
                '[models."claude-haiku-4.5"]\nname = "claude-haiku-4-5-20251001"\n',
                {"OPENAI_BASE_URL": "http://ignored/v1"})
    openai = cat.providers["openai"]
    assert (openai.protocol, openai.base_url, openai.api_key_env, dict(openai.headers)) == (
        "openai-responses", "https://gateway.example/v1", "OPENAI_API_KEY", {"X-Team": "core"})
    assert cat.providers["anthropic"].api_key_env == "TEAM_ANTHROPIC_KEY"
    assert cat.models["gpt-5-mini"] == ModelSpec("gpt-5-mini", "openai", "gpt-5-mini", True)
    assert cat.models["claude-haiku-4.5"].name == "claude-haiku-4-5-20251001"
    assert cat.resolve("claude-haiku-4.5").wire_name == "claude-haiku-4-5-20251001"


def test_a_built_in_model_can_move_to_another_provider() -> None:
    cat = parse(ISSUE_FILE + '[models.gpt-5-mini]\nprovider = "local"\n')
    resolved = cat.resolve("gpt-5-mini")
    assert (resolved.provider.id, resolved.wire_name) == ("local", "gpt-5-mini")


def test_an_empty_key_variable_means_no_key() -> None:
    cat = parse('[providers.openai]\nbase_url = "http://127.0.0.1:4000/v1"\napi_key_env = ""\n')
    assert cat.providers["openai"].api_key_env is None
    assert cat.key_status("openai", {}) == "not needed"
    assert cat.api_key("openai", {}) is None


def test_quoted_and_dotted_keys() -> None:
    cat = parse('models."gw.large".provider = "my-gw"\nmodels."gw.large".name = "large"\n'
                '[providers."my-gw"]\nprotocol = "openai-chat"\nbase_url = "https://gw/v1"\n')
    assert cat.resolve("gw.large").provider.id == "my-gw"


# --------------------------------------------------------------------------- malformed files


def test_malformed_toml_names_file_line_and_field() -> None:
    err = failure(ISSUE_FILE.replace('name = "qwen3-8b"', 'name = "qwen3-8b'))
    assert err.details == {"file": "/srv/cody/cody.toml", "line": 9, "field": "models.qwen.name"}
    assert err.message.startswith("/srv/cody/cody.toml:9: models.qwen.name: invalid TOML: ")


def test_a_duplicate_key_is_malformed_toml() -> None:
    err = failure(ISSUE_FILE + 'name = "again"\n')
    assert err.details is not None and err.details["line"] == 11
    assert "invalid TOML" in err.message


@pytest.mark.parametrize(("change", "line", "field", "problem"), [
    (('"openai-chat"', '"openai-chats"'), 2, "providers.local.protocol",
     "unknown protocol 'openai-chats' (expected openai-responses | anthropic-messages | "
     "openai-chat)"),
    (('"openai-chat"', "3"), 2, "providers.local.protocol", "must be a string, not a number"),
    (('"http://127.0.0.1:8000/v1"', '"127.0.0.1:8000"'), 3, "providers.local.base_url",
     "'127.0.0.1:8000' is not an http(s) URL"),
    (('"LOCAL_API_KEY"', '"LOCAL-KEY"'), 4, "providers.local.api_key_env",
     "'LOCAL-KEY' is not an environment variable name (letters, digits and '_')"),
    (('{ "X-Team" = "core" }', '"X-Team: core"'), 5, "providers.local.headers",
     "must be a table of header names to strings, not a string"),
    (('{ "X-Team" = "core" }', '{ "X Team" = "core" }'), 5, "providers.local.headers.X Team",
     "not a valid HTTP header name"),
    (('{ "X-Team" = "core" }', '{ "X-Team" = 1 }'), 5, "providers.local.headers.X-Team",
     "must be a string, not a number"),
    (('provider = "local"', 'provider = "remote"'), 8, "models.qwen.provider",
     "no provider 'remote' (known: openai, anthropic, local)"),
    (('name = "qwen3-8b"', 'name = " "'), 9, "models.qwen.name", "must not be empty"),
    (("reasoning = false", 'reasoning = "no"'), 10, "models.qwen.reasoning",
     "must be true or false, not a string"),
    (("reasoning = false", "reasoning_effort = 'low'"), 10, "models.qwen.reasoning_effort",
     "unknown field (expected provider, name, reasoning)"),
    (("api_key_env", "key_env"), 4, "providers.local.key_env",
     "unknown field (expected protocol, base_url, api_key_env, headers)"),
    (("[models.qwen]", "[model.qwen]"), 7, "model",
     "unknown section (expected [providers.<id>] or [models.<id>])"),
    (("[providers.local]", "[providers.'local/x']"), 1, "providers.local/x",
     "an id is letters, digits, '.', '_' and '-', starting with a letter or digit"),
    (("[models.qwen]", "[models.' qwen']"), 7, "models. qwen",
     "an id is letters, digits, '.', '_', '-', ':', '/', '@' and '+', starting with a letter "
     "or digit"),
])
def test_bad_values_name_file_line_and_field(change: tuple[str, str], line: int, field: str,
                                             problem: str) -> None:
    text = ISSUE_FILE.replace(*change)
    assert text != ISSUE_FILE
    if change[1] == "[providers.'local/x']":
        text = text.replace('provider = "local"', "provider = 'local/x'")
    err = failure(text)
    assert err.details == {"file": "/srv/cody/cody.toml", "line": line, "field": field}
    assert err.message == f"/srv/cody/cody.toml:{line}: {field}: {problem}"


@pytest.mark.parametrize(("text", "field"), [
    ('[providers.x]\nbase_url = "http://h/v1"\n', "providers.x.protocol"),
    ('[providers.x]\nprotocol = "openai-chat"\n', "providers.x.base_url"),
    ('[models.x]\nname = "n"\n', "models.x.provider"),
    ('[models.x]\nprovider = "openai"\n', "models.x.name"),
])
def test_required_fields_of_new_entries(text: str, field: str) -> None:
    err = failure(text)
    assert err.details is not None and err.details["field"] == field
    assert err.details["line"] == 1  # the table's header: the field is missing from it
    assert "required" in err.message


def test_an_unquoted_id_with_a_dot_gets_a_hint() -> None:
    err = failure('[models.claude-haiku-4.5]\nreasoning = true\n')
    assert err.details == {"file": "/srv/cody/cody.toml", "line": 1,
                           "field": "models.claude-haiku-4.5"}
    assert err.message.endswith("""an id with a '.' must be quoted: [models."claude-haiku-4.5"]""")


def test_tables_of_the_wrong_shape() -> None:
    assert failure('providers = "openai"\n').details == {
        "file": "/srv/cody/cody.toml", "line": 1, "field": "providers"}
    assert failure("[providers]\nlocal = 3\n").details == {
        "file": "/srv/cody/cody.toml", "line": 2, "field": "providers.local"}


def test_a_missing_file_the_user_named_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_catalogue(tmp_path / "nope.toml", {}, required=True)
    assert info.value.details == {"file": str(tmp_path / "nope.toml"), "line": None,
                                  "field": None}


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "cody.toml"
    path.write_bytes(b"\xff\xfe[providers]")
    with pytest.raises(ValidationFailed) as info:
        load_catalogue(path, {})
    assert info.value.message.startswith(f"{path}: cannot read it")


# --------------------------------------------------------------------------- resolution


def test_catalogue_ids_resolve_to_their_wire_names() -> None:
    cat = parse(ISSUE_FILE)
    qwen = cat.resolve("qwen")
    assert (qwen.provider.id, qwen.model_id, qwen.wire_name, qwen.reasoning) == (
        "local", "qwen", "qwen3-8b", False)
    codex = cat.resolve("gpt-5-codex", "openai")
    assert (codex.provider.protocol, codex.wire_name, codex.reasoning) == (
        "openai-responses", "gpt-5-codex", True)
    sonnet = cat.resolve("claude-sonnet-4.5")
    assert (sonnet.provider.id, sonnet.wire_name, sonnet.reasoning) == (
        "anthropic", "claude-sonnet-4-5", True)


@pytest.mark.parametrize(("model", "provider", "wire", "reasoning"), [
    ("openai/gpt-4.1", "openai", "gpt-4.1", False),
    ("anthropic/claude-opus-4-5", "anthropic", "claude-opus-4-5", False),
    ("local/qwen3-8b", "local", "qwen3-8b", False),  # also the wire name of `qwen`
    ("local/org/model:q4", "local", "org/model:q4", False),  # only the first / splits
    ("openai/gpt-5-codex", "openai", "gpt-5-codex", True),  # a catalogue model's setting
])
def test_provider_slash_model_is_sent_as_is(model: str, provider: str, wire: str,
                                            reasoning: bool) -> None:
    resolved = parse(ISSUE_FILE).resolve(model)
    assert (resolved.provider.id, resolved.model_id, resolved.wire_name,
            resolved.reasoning) == (provider, model, wire, reasoning)
    assert parse(ISSUE_FILE).resolve(model, provider) == resolved


def test_a_catalogue_id_with_a_slash_wins_over_routing() -> None:
    cat = parse(ISSUE_FILE + '[models."openai/gpt-4.1"]\nprovider = "openai"\n'
                'name = "gpt-4.1-2025-04-14"\nreasoning = false\n')
    assert cat.resolve("openai/gpt-4.1").wire_name == "gpt-4.1-2025-04-14"


def test_defaults() -> None:
    cat = parse(ISSUE_FILE)
    assert cat.resolve(None).model_id == "gpt-5-mini"
    assert cat.resolve(None, "openai").model_id == "gpt-5-mini"
    assert cat.resolve(None, "anthropic").model_id == "claude-haiku-4.5"
    assert cat.resolve(None, "local").model_id == "qwen"  # the file's first model for it
    other = parse_catalogue(ISSUE_FILE, "f", {}, default_model="local/llama")
    assert (other.resolve(None).provider.id, other.resolve(None).wire_name) == ("local", "llama")
    assert other.resolve(None, "anthropic").model_id == "claude-haiku-4.5"


@pytest.mark.parametrize(("model", "provider", "error", "field", "words"), [
    ("gpt-9", None, InvalidModel, "model", "unknown model 'gpt-9'"),
    ("nowhere/gpt-9", None, UnknownProvider, "model", "unknown provider 'nowhere'"),
    ("openai/", None, InvalidModel, "model", "no model name after 'openai/'"),
    ("qwen", "openai", InvalidModel, "model", "served by provider 'local', not 'openai'"),
    ("anthropic/claude-opus-4-5", "openai", InvalidModel, "model",
     "served by provider 'anthropic'"),
    ("gpt-5-mini", "nowhere", UnknownProvider, "provider_id", "unknown provider 'nowhere'"),
])
def test_resolution_errors_name_the_field(model: str, provider: str | None,
                                          error: type[Exception], field: str,
                                          words: str) -> None:
    with pytest.raises(error) as info:
        parse(ISSUE_FILE).resolve(model, provider)
    assert info.value.details == {"field": field}  # type: ignore[attr-defined]
    assert words in str(info.value)


def test_a_provider_without_models_needs_one_named() -> None:
    cat = parse('[providers.gw]\nprotocol = "openai-chat"\nbase_url = "http://gw/v1"\n')
    with pytest.raises(InvalidModel) as info:
        cat.resolve(None, "gw")
    assert "'gw/<model name>'" in str(info.value)
    assert cat.resolve("gw/m", "gw").wire_name == "m"


# --------------------------------------------------------------------------- keys


def test_key_status_and_missing_key_variable() -> None:
    cat = parse(ISSUE_FILE + '[providers.open]\nprotocol = "openai-chat"\n'
                'base_url = "http://127.0.0.1:11434/v1"\n')
    env = {"OPENAI_API_KEY": "sk-test-1"}
    assert cat.key_status("openai", env) == "set"
    assert cat.key_status("anthropic", env) == "missing"
    assert cat.key_status("local", {"LOCAL_API_KEY": ""}) == "missing"
    assert cat.key_status("open", env) == "not needed"
    assert cat.api_key("openai", env) == "sk-test-1"
    assert cat.api_key("open", env) is None
    with pytest.raises(ProviderNotConfigured) as info:
        cat.api_key("local", env)
    assert info.value.details == {"field": "provider_id", "provider": "local",
                                  "api_key_env": "LOCAL_API_KEY"}
    assert "LOCAL_API_KEY" in info.value.message
    assert "sk-test-1" not in repr(cat)  # the catalogue never holds a key


# --------------------------------------------------------------------------- in a runtime


def configured(tmp_path: Path, text: str | None = None, **settings: object) -> Catalogue:
    from runtime.catalogue import load_configured
    from runtime.config import RuntimeConfig

    if text is not None:
        (tmp_path / "cody.toml").write_text(text)
    return load_configured(RuntimeConfig(data_dir=tmp_path, **settings))  # type: ignore[arg-type]


def test_the_runtime_reads_cody_toml_from_its_data_dir(tmp_path: Path) -> None:
    assert configured(tmp_path) == builtin_catalogue({})  # no file: the built-ins
    cat = configured(tmp_path, ISSUE_FILE)
    assert cat.source == str(tmp_path / "cody.toml") and "qwen" in cat.models


def test_cody_config_names_the_file(tmp_path: Path) -> None:
    from runtime.config import RuntimeConfig

    other = tmp_path / "elsewhere.toml"
    other.write_text(ISSUE_FILE)
    cfg = RuntimeConfig.from_env({"CODY_DATA_DIR": str(tmp_path / "d"),
                                  "CODY_CONFIG": str(other), "LOCAL_API_KEY": "sk-loc-7f3a"})
    assert cfg.effective_config_path == other
    assert "sk-loc-7f3a" not in repr(cfg) and "environ" not in cfg.model_dump()
    from runtime.catalogue import load_configured

    cat = load_configured(cfg)
    assert cat.source == str(other)
    assert cat.key_status("local", cfg.provider_env()) == "set"


def test_the_configs_keys_and_base_urls_reach_the_built_ins(tmp_path: Path) -> None:
    from runtime.config import RuntimeConfig

    cfg = RuntimeConfig(data_dir=tmp_path, openai_api_key="sk-1",
                        anthropic_base_url="http://gw:1")
    cat = configured(tmp_path, openai_api_key="sk-1", anthropic_base_url="http://gw:1")
    assert cat.providers["anthropic"].base_url == "http://gw:1"
    assert [m.key for m in cat.listing(cfg.provider_env())] == ["set", "set", "missing",
                                                                "missing"]


def test_default_model_and_provider_settings(tmp_path: Path) -> None:
    assert configured(tmp_path).resolve(None).model_id == "gpt-5-mini"
    assert configured(tmp_path, default_provider="anthropic").resolve(None).model_id == \
        "claude-haiku-4.5"
    cat = configured(tmp_path, ISSUE_FILE, default_model="local/qwen3-32b")
    assert (cat.resolve(None).provider.id, cat.resolve(None).wire_name) == ("local",
                                                                            "qwen3-32b")
    assert configured(tmp_path, ISSUE_FILE, default_provider="local").resolve(
        None).model_id == "qwen"
    for settings, field in (({"default_model": "gpt-2"}, "CODY_DEFAULT_MODEL"),
                            ({"default_provider": "mistral"}, "CODY_DEFAULT_PROVIDER")):
        with pytest.raises(ValidationFailed) as info:
            configured(tmp_path, **settings)
        assert info.value.details == {"field": field}
        assert info.value.message.startswith(field + ": ")


def test_a_providers_key_variable_is_never_passed_to_exec(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        configured(tmp_path, ISSUE_FILE, exec_env={"PATH": "/bin", "LOCAL_API_KEY": "x"})
    assert info.value.message == ("CODY_EXEC_ENV_ALLOW: LOCAL_API_KEY holds the key of "
                                  "provider 'local'")


def test_a_malformed_file_is_a_start_up_error_naming_file_line_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        configured(tmp_path, '[providers.local]\nprotocol = "grpc"\nbase_url = "http://h"\n')
    assert info.value.details == {"file": str(tmp_path / "cody.toml"), "line": 2,
                                  "field": "providers.local.protocol"}


def test_listing_shows_key_status_never_keys() -> None:
    cat = parse(ISSUE_FILE + '[providers.open]\nprotocol = "openai-chat"\n'
                'base_url = "http://h/v1"\n[models.o]\nprovider = "open"\nname = "o-1"\n'
                'reasoning = true\n')
    env = {"OPENAI_API_KEY": "sk-secret"}
    listing = cat.listing(env)
    assert [(m.id, m.provider, m.protocol, m.key) for m in listing] == [
        ("gpt-5-mini", "openai", "openai-responses", "set"),
        ("gpt-5-codex", "openai", "openai-responses", "set"),
        ("claude-haiku-4.5", "anthropic", "anthropic-messages", "missing"),
        ("claude-sonnet-4.5", "anthropic", "anthropic-messages", "missing"),
        ("qwen", "local", "openai-chat", "missing"),
        ("o", "open", "openai-chat", "not needed")]
    assert "sk-secret" not in str([m.model_dump() for m in listing])


@pytest.mark.parametrize(("protocol", "reasoning", "expected"), [
    ("openai-responses", True, ("medium", None)),
    ("openai-chat", True, ("medium", None)),
    ("anthropic-messages", True, (None, 2048)),
    ("openai-chat", False, (None, None)),
    ("anthropic-messages", False, (None, None)),
])
def test_reasoning_defaults_by_protocol(protocol: str, reasoning: bool,
                                        expected: tuple[str | None, int | None]) -> None:
    from runtime.catalogue import reasoning_defaults

    assert reasoning_defaults(protocol, reasoning, "medium", 2048) == expected


def test_replay_plays_a_model_without_recordings_of_its_own() -> None:
    """By the wire name first (``local/Qwen/Qwen3-8B`` is qwen3-8b's), then the provider's
    recording of the prompt, then the provider's simple_message; nothing for a provider
    with no recordings."""
    from actors.providers.fixtures import FixtureLibrary

    library = FixtureLibrary()
    reasoning = library.get("local", "reasoning_message")  # gpt-oss-20b's default
    assert library.select("local", "local/openai/gpt-oss-20b", "Any prompt",
                          "openai/gpt-oss-20b") is reasoning
    simple = library.get("local", "simple_message")
    assert library.select("local", "local/unknown", simple.prompt, "unknown") is simple
    tools = library.get("openai", "tool_read_file")
    assert library.select("openai", "openai/gpt-4.1", tools.prompt, "gpt-4.1") is tools
    assert library.select("openai", "openai/gpt-4.1", "Anything", "gpt-4.1") is \
        library.get("openai", "simple_message")
    assert library.select("anthropic", "opus", "Anything", "claude-opus-4-5") is \
        library.get("anthropic", "simple_message")
    assert library.select("mine", "mine/m", "Anything", "m") is None
