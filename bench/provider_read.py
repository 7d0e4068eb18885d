"""CPU per provider chunk on the live client's read path: httpx's iteration (one cancel scope
per read) against ``ProviderBody.pump`` (one idle deadline per stream, read straight from the
connection), in one process, interleaved, so that a busy machine affects both alike.

``streams`` concurrent streams from bench/token_provider.py (its own process), each
``tokens`` tokens ``pace_ms`` apart: nearly every token is its own chunk, as at a model's
pace. Each round runs both paths once; the figure is the median over rounds of process CPU
per chunk delivered.

    python -m bench.provider_read [--streams 50] [--tokens 400] [--pace-ms 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.providers.http_body import ProviderBody
from actors.providers.live import Endpoint, open_live_providers
from actors.providers.provider import ModelProvider, ProviderCall
from bench.processes import process, wait_port
from bench.token_provider import prompt
from runtime.config import RuntimeConfig
from tests.e2e.server import free_port

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = [0]
"""Chunks delivered in the measured rounds (for instruction counts under callgrind: run
``--path iterate`` and ``--path pump`` separately, and ``--rounds 0`` for the fixed cost)."""


async def one(provider: ModelProvider, tokens: int, pace_ms: float, pumped: bool) -> int:
    call = ProviderCall(run_id=str(uuid.uuid4()), provider_id="openai", model_id="gpt-5-mini",
                        prompt="", exchange=0, body={"model": "gpt-5-mini", "stream": True,
                                                     "input": prompt(tokens, pace_ms)})
    chunks = 0
    send, receive = trio.open_memory_channel[bytes | Exception](64)
    async with trio.open_nursery() as nursery:

        async def drain() -> None:
            nonlocal chunks
            async for _ in receive:
                chunks += 1

        nursery.start_soon(drain)
        async with send, provider.stream(call) as body:
            if pumped:
                assert isinstance(body, ProviderBody)
                await body.pump(send)
            else:  # what the run actor did before
                async for chunk in body:
                    if chunk:
                        await send.send(chunk)
    return chunks


async def measure(provider: ModelProvider, streams: int, tokens: int, pace_ms: float,
                  pumped: bool) -> float:
    counts: list[int] = []

    async def run() -> None:
        counts.append(await one(provider, tokens, pace_ms, pumped))

    c0 = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(streams):
            nursery.start_soon(run)
    CHUNKS[0] += sum(counts)
    return (time.process_time() - c0) / sum(counts) * 1e6


async def main(args: argparse.Namespace) -> None:
    cfg = RuntimeConfig.model_validate({"data_dir": Path("/nonexistent"), "provider_pools": 1})
    base = f"http://127.0.0.1:{args.port}/v1"
    async with open_live_providers(cfg, [Endpoint("openai", "openai-responses", base, "k",
                                                  "OPENAI_API_KEY")]) as live:
        provider = live["openai"]
        await measure(provider, args.streams, 50, 0.0, True)  # warm the pool
        CHUNKS[0] = 0
        results: dict[bool, list[float]] = {False: [], True: []}
        paths = {"both": (False, True), "iterate": (False,), "pump": (True,)}[args.path]
        for _ in range(args.rounds):
            for pumped in paths:
                results[pumped].append(await measure(provider, args.streams, args.tokens,
                                                     args.pace_ms, pumped))
        print(f"chunks: {CHUNKS[0]}")
        if args.path != "both":
            return
        old, new = statistics.median(results[False]), statistics.median(results[True])
        print(f"CPU per chunk, httpx iteration: {old:.1f} us  {results[False]}")
        print(f"CPU per chunk, pump:            {new:.1f} us  {results[True]}")
        print(f"saved: {old - new:.1f} us per chunk ({1 - new / old:.0%})")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--pace-ms", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--path", choices=("both", "iterate", "pump"), default="both")
    args = parser.parse_args()
    args.port = free_port()
    with process([sys.executable, "-m", "bench.token_provider", "--port", str(args.port)],
                 Path(f"/tmp/token_provider-{args.port}.log"), cwd=ROOT) as proc:
        wait_port("127.0.0.1", args.port, proc)
        trio.run(main, args)


if __name__ == "__main__":
    cli()
