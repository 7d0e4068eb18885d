"""The live client's body read path (``actors/providers/http_body.py``): the run actor pumps a
provider's body straight from the connection under one idle deadline per stream, and
everything httpx did for it still works - the exact bytes, keep-alive pooling, TLS, a proxy
from the environment, a dropped connection, an idle stream."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trustme

from actors.providers.fixtures import FixtureLibrary
from actors.providers.http_body import ProviderBody
from actors.providers.live import Endpoint, open_live_providers
from actors.providers.provider import ModelProvider, ProviderCall
from bench.token_provider import TEMPLATE, prompt
from bench.token_provider import serve as serve_tokens
from runtime.config import RuntimeConfig
from runtime.errors import PROVIDER_CONNECTION_LOST, PROVIDER_IDLE_TIMEOUT, ProviderError
from tests.fake_provider import FakeProvider, Fault
from tests.tcp_proxy import TcpProxy

FX = FixtureLibrary().get("openai", "simple_message")


def config(**more: object) -> RuntimeConfig:
    return RuntimeConfig.model_validate({"data_dir": Path("/nonexistent"),
                                         "provider_max_retries": 0, "provider_pools": 1,
                                         **more})


def call_for(body: dict[str, object]) -> ProviderCall:
    return ProviderCall(run_id=str(uuid.uuid4()), provider_id="openai", model_id=FX.model,
                        prompt=FX.prompt, exchange=0, body=body)


async def pump(provider: ModelProvider, call: ProviderCall) -> tuple[bytes, bool]:
    """The body as the run actor gets it, and whether it was read from the connection."""
    send, receive = trio.open_memory_channel[bytes | Exception](4)
    got: list[bytes] = []

    async def drain() -> None:
        async for item in receive:
            assert isinstance(item, bytes)
            got.append(item)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            async with send, provider.stream(call) as body:
                assert isinstance(body, ProviderBody)
                await body.pump(send)
    except ExceptionGroup as group:  # the pump's own error, as the run actor would see it
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], ProviderError):
            raise group.exceptions[0] from None
        raise
    return b"".join(got), body.raw


def endpoints(base_url: str) -> Sequence[Endpoint]:
    return [Endpoint("openai", "openai-responses", base_url, "test-key", "OPENAI_API_KEY")]


async def test_pump_reads_the_exact_body_from_the_connection() -> None:
    with FakeProvider() as fake, trio.fail_after(20):
        async with open_live_providers(config(), endpoints(fake.openai_base_url)) as live:
            data, raw = await pump(live["openai"], call_for(FX.exchanges[0].request))
    assert raw, "the fast path was not taken: check raw_http11 against this httpcore"
    assert data == FX.exchanges[0].stream


async def test_keep_alive_connections_are_pooled_across_streams() -> None:
    """The token provider keeps connections alive (chunked bodies): three streams one after
    the other go over one connection, each body whole."""
    async with trio.open_nursery() as nursery:
        port = 18000 + uuid.uuid4().int % 20000
        await nursery.start(serve_tokens, port)
        proxy = TcpProxy("127.0.0.1", port)
        proxy_port = await nursery.start(proxy.serve)
        with trio.fail_after(20):
            async with open_live_providers(
                    config(), endpoints(f"http://127.0.0.1:{proxy_port}/v1")) as live:
                for tokens in (3, 50, 1):
                    data, raw = await pump(live["openai"], call_for(
                        {"model": "gpt-5-mini", "input": prompt(tokens, 0), "stream": True}))
                    assert raw
                    assert data.count(b"event: response.output_text.delta\n") == tokens
                    assert data.startswith(TEMPLATE.head)
                    assert data.endswith(b"\n\n")
        assert proxy.connections == 1
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_fake(ca: trustme.CA) -> FakeProvider:
    fake = FakeProvider()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    fake._server.socket = ctx.wrap_socket(fake._server.socket, server_side=True)
    return fake


async def connect_proxy(tunnels: list[str], *,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A forward proxy that only tunnels (CONNECT), as corporate proxies for HTTPS do."""

    async def handle(client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await client.receive_some(4096)
        target = head.split(b" ", 2)[1].decode()
        tunnels.append(target)
        host, _, port = target.rpartition(":")
        upstream = await trio.open_tcp_stream(host, int(port))
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def splice(a: trio.SocketStream, b: trio.SocketStream) -> None:
            try:
                while data := await a.receive_some(65536):
                    await b.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await b.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(splice, client, upstream)
            nursery.start_soon(splice, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_over_tls_through_a_proxy_from_the_environment(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    tunnels: list[str] = []
    with tls_fake(ca) as fake, trio.fail_after(20):
        base = f"https://localhost:{fake.port}/v1"
        async with open_live_providers(config(), endpoints(base)) as live:  # direct
            data, raw = await pump(live["openai"], call_for(FX.exchanges[0].request))
        assert raw and data == FX.exchanges[0].stream
        async with trio.open_nursery() as nursery:
            proxy_port = await nursery.start(connect_proxy, tunnels)
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
            async with open_live_providers(config(), endpoints(base)) as live:
                data, raw = await pump(live["openai"], call_for(FX.exchanges[0].request))
            nursery.cancel_scope.cancel()
    assert tunnels == [f"localhost:{fake.port}"]
    assert raw and data == FX.exchanges[0].stream


async def iterate(provider: ModelProvider, call: ProviderCall) -> bytes:
    """The body as httpx hands it over (the path before this one)."""
    async with provider.stream(call) as body:
        return b"".join([chunk async for chunk in body])


async def outcome(read: object) -> bytes | str:
    try:
        got = await read  # type: ignore[misc]
    except ProviderError as exc:
        return exc.code
    return got[0] if isinstance(got, tuple) else got  # type: ignore[no-any-return]


@pytest.mark.parametrize("tls", [False, True])
async def test_a_dropped_stream_ends_as_it_did_through_httpx(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: bool) -> None:
    """The fake ends its bodies by closing the connection, so a drop reads as the end of the
    body (over TLS too: httpcore's TLS streams take a close without close_notify as the end,
    as browsers do); the normaliser then finds the stream incomplete. Pumped and iterated,
    the outcome is the same."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    fake = tls_fake(ca) if tls else FakeProvider()
    outcomes = []
    with fake, trio.fail_after(20):
        base = f"{'https://localhost' if tls else 'http://127.0.0.1'}:{fake.port}/v1"
        async with open_live_providers(config(), endpoints(base)) as live:
            for read in (pump, iterate):
                fake.faults.append(Fault("drop", after_blocks=2))
                outcomes.append(await outcome(read(live["openai"],
                                                   call_for(FX.exchanges[0].request))))
    assert outcomes[0] == outcomes[1]
    assert isinstance(outcomes[0], bytes)
    assert outcomes[0] and FX.exchanges[0].stream.startswith(outcomes[0])
    assert outcomes[0] != FX.exchanges[0].stream


async def test_a_chunked_body_cut_short_is_connection_lost() -> None:
    async with trio.open_nursery() as nursery:
        port = 18000 + uuid.uuid4().int % 20000
        await nursery.start(serve_tokens, port)
        proxy = TcpProxy("127.0.0.1", port)
        proxy_port = await nursery.start(proxy.serve)
        with trio.fail_after(20):
            async with open_live_providers(
                    config(), endpoints(f"http://127.0.0.1:{proxy_port}/v1")) as live:
                body = {"model": "gpt-5-mini", "input": prompt(100, 20), "stream": True}

                async def cut() -> None:
                    await trio.sleep(0.3)
                    proxy.cut()

                nursery.start_soon(cut)
                with pytest.raises(ProviderError) as caught:
                    await pump(live["openai"], call_for(body))
        assert caught.value.code == PROVIDER_CONNECTION_LOST
        nursery.cancel_scope.cancel()


async def test_an_idle_stream_times_out_once_for_the_stream() -> None:
    with FakeProvider(block_delay_s=0.1) as fake, trio.fail_after(20):
        fake.faults.append(Fault("stall", after_blocks=2, stall_s=3.0))
        async with open_live_providers(config(provider_idle_timeout_s=0.5),
                                       endpoints(fake.openai_base_url)) as live:
            start = trio.current_time()
            with pytest.raises(ProviderError) as caught:
                await pump(live["openai"], call_for(FX.exchanges[0].request))
            took = trio.current_time() - start
    assert caught.value.code == PROVIDER_IDLE_TIMEOUT
    # blocks 0.1 s apart reset the deadline; then 0.5 s of nothing ends it
    assert 0.6 < took < 2.5


async def test_back_pressure_is_not_idleness() -> None:
    """A reader that takes longer than the idle timeout to make room is not the provider
    being idle: the deadline is lifted while a chunk waits for the channel."""
    with FakeProvider() as fake, trio.fail_after(20):
        async with open_live_providers(config(provider_idle_timeout_s=0.3),
                                       endpoints(fake.openai_base_url)) as live:
            send, receive = trio.open_memory_channel[bytes | Exception](0)
            got: list[bytes] = []

            async def slow() -> None:
                async for item in receive:
                    assert isinstance(item, bytes)
                    got.append(item)
                    if len(got) == 1:
                        await trio.sleep(0.8)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                async with send, live["openai"].stream(
                        call_for(FX.exchanges[0].request)) as body:
                    assert isinstance(body, ProviderBody)
                    await body.pump(send)
    assert b"".join(got) == FX.exchanges[0].stream
