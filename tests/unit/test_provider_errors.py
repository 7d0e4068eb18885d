"""Provider failures a user can act on: the classifier, the live client's errors for each
protocol (over httpx's MockTransport), and keys kept out of every message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from actors.providers.live import Endpoint, HttpProvider, RetryPolicy, _error_from_body
from actors.providers.provider import ProviderCall
from actors.providers.provider_errors import classify, redact
from runtime.catalogue import parse_catalogue
from runtime.errors import CONTEXT_TOO_LONG, MODEL_NOT_FOUND, PROVIDER_AUTH, ProviderError

KEY = "sk-cody-FAKE-7f3a9c1e5b2d4680aa11"


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (401, "invalid_api_key", "Incorrect API key provided", PROVIDER_AUTH),
    (401, "authentication_error", "invalid x-api-key", PROVIDER_AUTH),
    (403, "permission_error", "Your key cannot use this model", PROVIDER_AUTH),
    (403, "http_403", "Forbidden", PROVIDER_AUTH),
    (None, "invalid_api_key", "bad key", PROVIDER_AUTH),
    (404, "model_not_found", "The model `gpt-9` does not exist or you do not have access to it.",
     MODEL_NOT_FOUND),
    (404, "not_found_error", "model: claude-opus-9", MODEL_NOT_FOUND),
    (404, "NotFoundError", "The model `qwen` does not exist.", MODEL_NOT_FOUND),  # vLLM
    (404, "http_404", 'model "llama9" not found, try pulling it first', MODEL_NOT_FOUND),
    (400, "model_not_found", "unknown model", MODEL_NOT_FOUND),
    (404, "http_404", "Not Found", None),  # a wrong base_url path is not the model's fault
    (400, "context_length_exceeded", "This model's maximum context length is 128000 tokens.",
     CONTEXT_TOO_LONG),
    (400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum",
     CONTEXT_TOO_LONG),
    (400, "invalid_request_error",
     "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
     CONTEXT_TOO_LONG),
    (400, "BadRequestError", "This model's maximum context length is 4096 tokens. However, "
     "you requested 5000 tokens", CONTEXT_TOO_LONG),
    (400, "exceed_context_size_error", "the request exceeds the available context size",
     CONTEXT_TOO_LONG),
    (400, "http_400", "The input token count (1200000) exceeds the maximum number of tokens "
     "allowed (1048576).", CONTEXT_TOO_LONG),
    (None, "context_length_exceeded", "too long", CONTEXT_TOO_LONG),
    (400, "invalid_request_error", "max_tokens: 100000 > 64000, which is the maximum allowed "
     "number of output tokens", None),
    (500, "server_error", "maximum context length", None),  # a 5xx is the server's problem
    (429, "rate_limit_exceeded", "slow down", None),
])
def test_classify(status: int | None, code: str, message: str, expected: str | None) -> None:
    assert classify(status=status, code=code, message=message) == expected


def test_redact() -> None:
    text = f"Incorrect API key provided: {KEY}. Also Bearer abcdefgh12345678 and sk-proj-x1y2z3w4"
    assert redact(text, [KEY, None, ""]) == (
        "Incorrect API key provided: [redacted]. Also [redacted] and [redacted]")
    assert redact("no secrets here: sk-learn", [KEY]) == "no secrets here: sk-learn"


@pytest.mark.parametrize(("body", "code", "message"), [
    (b'{"error": {"message": "m", "type": "invalid_request_error", "code": "model_not_found"}}',
     "model_not_found", "m"),
    (b'{"type": "error", "error": {"type": "not_found_error", "message": "model: x"}}',
     "not_found_error", "model: x"),
    (b'{"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError",'
     b' "param": null, "code": 404}', "NotFoundError", "The model `x` does not exist."),
    (b'{"error": "model \\"x\\" not found"}', "http_404", 'model "x" not found'),
    (b'{"detail": "Not Found"}', "http_404", "Not Found"),
    (b"<html>nope</html>", "http_404", "<html>nope</html>"),
    (b"", "http_404", "HTTP 404"),
    (b"[1]", "http_404", "HTTP 404"),
])
def test_error_bodies_of_every_server(body: bytes, code: str, message: str) -> None:
    assert _error_from_body(404, body) == (code, message)


# --------------------------------------------------------------------------- the live client


def call(model_id: str = "gpt-5-mini", wire: str = "gpt-5-mini") -> ProviderCall:
    return ProviderCall(run_id="r", provider_id="openai", model_id=model_id, prompt="p",
                        exchange=0, body={"model": wire, "stream": True})


def provider(handler: Any, endpoint: Endpoint) -> HttpProvider:
    return HttpProvider(endpoint, client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
                        retry=RetryPolicy(0, 0.01, 0.01), idle_timeout_s=5)


async def failure(endpoint: Endpoint, status: int, body: dict[str, Any],
                  the_call: ProviderCall | None = None) -> ProviderError:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    with trio.fail_after(10), pytest.raises(ProviderError) as info:
        async with provider(handler, endpoint).stream(the_call or call()):
            pass
    assert len(seen) == 1
    return info.value


OPENAI = Endpoint("openai", "openai-responses", "https://api.openai.com/v1", KEY,
                  "OPENAI_API_KEY")
ANTHROPIC = Endpoint("anthropic", "anthropic-messages", "https://api.anthropic.com", KEY,
                     "ANTHROPIC_API_KEY")
LOCAL = Endpoint("local", "openai-chat", "http://127.0.0.1:8000/v1", KEY, "LOCAL_API_KEY",
                 {"X-Team": "core"})


@pytest.mark.parametrize("endpoint", [OPENAI, ANTHROPIC, LOCAL], ids=lambda e: e.id)
async def test_a_refused_key_names_the_provider_and_its_variable(endpoint: Endpoint) -> None:
    err = await failure(endpoint, 401, {"error": {
        "message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
        "code": "invalid_api_key"}})
    assert err.code == PROVIDER_AUTH
    assert err.message.startswith(f"{endpoint.id} refused the API key (HTTP 401: ")
    assert err.message.endswith(f"check the key in {endpoint.api_key_env}")
    assert err.details == {"provider": endpoint.id, "status": 401, "attempts": 1,
                           "provider_code": "invalid_api_key",
                           "api_key_env": endpoint.api_key_env}
    assert KEY not in err.message and "[redacted]" in err.message


async def test_a_refused_request_to_a_keyless_provider_says_how_to_add_one() -> None:
    keyless = Endpoint("local", "openai-chat", "http://127.0.0.1:8000/v1")
    err = await failure(keyless, 403, {"detail": "Forbidden"})
    assert err.code == PROVIDER_AUTH
    assert "set api_key_env in [providers.local] of cody.toml" in err.message


async def test_a_missing_model_is_named() -> None:
    err = await failure(OPENAI, 404, {"error": {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "code": "model_not_found"}},
        call("openai/gpt-9", "gpt-9"))
    assert err.code == MODEL_NOT_FOUND
    assert err.message.startswith("openai has no model gpt-9 (Cody model openai/gpt-9)")
    assert err.details is not None and err.details["model"] == "gpt-9"


async def test_context_too_long_for_each_protocol() -> None:
    bodies = {
        "openai": {"error": {"message": "Your input exceeds the context window of this model.",
                             "type": "invalid_request_error",
                             "code": "context_length_exceeded"}},
        "anthropic": {"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum"}},
        "local": {"object": "error", "type": "BadRequestError", "code": 400,
                  "message": "This model's maximum context length is 32768 tokens. However, "
                             "you requested 40000 tokens."},
    }
    for endpoint in (OPENAI, ANTHROPIC, LOCAL):
        err = await failure(endpoint, 400, bodies[endpoint.id])
        assert err.code == CONTEXT_TOO_LONG, endpoint.id
        assert "too long for the context window of model gpt-5-mini" in err.message
        assert err.details is not None and err.details["model"] == "gpt-5-mini"


async def test_other_errors_keep_the_providers_code() -> None:
    err = await failure(LOCAL, 400, {"error": {"message": "bad temperature",
                                               "type": "invalid_request_error",
                                               "code": "invalid_value"}})
    assert (err.code, err.message) == ("invalid_value", "local: bad temperature")
    assert err.details == {"provider": "local", "status": 400, "attempts": 1}


async def test_each_protocol_sends_its_url_and_auth() -> None:
    seen: list[httpx.Request] = []

    class Done(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Done())

    gateway = Endpoint("gw", "openai-chat", "https://gw.example/api/v1/", None, None,
                       {"Authorization": "Token team-secret-123", "X-Team": "core"})
    for endpoint in (OPENAI, ANTHROPIC, LOCAL, gateway,
                     Endpoint("a2", "anthropic-messages", "https://proxy/v1", KEY)):
        async with provider(handler, endpoint).stream(call()) as body:
            assert b"".join([c async for c in body]) == b"data: [DONE]\n\n"
    urls = [str(r.url) for r in seen]
    assert urls == ["https://api.openai.com/v1/responses", "https://api.anthropic.com/v1/messages",
                    "http://127.0.0.1:8000/v1/chat/completions",
                    "https://gw.example/api/v1/chat/completions", "https://proxy/v1/messages"]
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[1].headers["x-api-key"] == KEY and "authorization" not in seen[1].headers
    assert seen[1].headers["anthropic-version"] == "2023-06-01"
    assert seen[2].headers["authorization"] == f"Bearer {KEY}"
    assert seen[2].headers["x-team"] == "core"
    assert seen[3].headers["authorization"] == "Token team-secret-123"  # the gateway's own
    assert all(r.headers["accept"] == "text/event-stream" for r in seen)


def test_endpoint_from_the_catalogue() -> None:
    cat = parse_catalogue('[providers.local]\nprotocol = "openai-chat"\n'
                          'base_url = "http://h/v1"\napi_key_env = "LOCAL_API_KEY"\n'
                          'headers = { "X-Team" = "core" }\n', "f", {})
    with_key = Endpoint.from_spec(cat.providers["local"], {"LOCAL_API_KEY": KEY})
    assert (with_key.id, with_key.protocol, with_key.url, with_key.api_key,
            with_key.api_key_env, dict(with_key.headers)) == (
        "local", "openai-chat", "http://h/v1/chat/completions", KEY, "LOCAL_API_KEY",
        {"X-Team": "core"})
    assert with_key.ready and KEY not in repr(with_key) and "core" not in repr(with_key)
    assert not Endpoint.from_spec(cat.providers["local"], {}).ready


async def test_no_key_in_messages_or_logs_on_retries_and_connect_errors(
        caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def echo(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError(f"refused, auth was {request.headers['authorization']}")
        return httpx.Response(503, json={"error": {
            "message": f"overloaded; you sent {request.headers['authorization']}",
            "code": f"busy-{KEY}"}})

    caplog.set_level(logging.DEBUG)
    p = HttpProvider(OPENAI, client=httpx.AsyncClient(transport=httpx.MockTransport(echo)),
                     retry=RetryPolicy(2, 0.001, 0.001), idle_timeout_s=5)
    with trio.fail_after(10), pytest.raises(ProviderError) as info:
        async with p.stream(call()):
            pass
    assert len(attempts) == 3
    text = info.value.message + repr(info.value.details) + info.value.code + caplog.text
    assert "retry" in caplog.text
    assert KEY not in text and "7f3a9c1e" not in text


async def test_a_base_url_with_credentials_is_not_shown() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    endpoint = Endpoint("local", "openai-chat", "http://user:hunter2@127.0.0.1:9/v1")
    p = HttpProvider(endpoint, client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)),
                     retry=RetryPolicy(0, 0.001, 0.001), idle_timeout_s=5)
    with trio.fail_after(10), pytest.raises(ProviderError) as info:
        async with p.stream(call()):
            pass
    assert info.value.code == "PROVIDER_UNREACHABLE"
    assert "hunter2" not in info.value.message
    assert "http://127.0.0.1:9/v1/chat/completions" in info.value.message
