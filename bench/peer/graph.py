"""One-node LangGraph graph that streams N tokens: the peer for Cody Core's token benchmarks.

Each token is written with ``get_stream_writer()`` (stream_mode "custom") and carries its
send time in ns, so the client measures delivery lag as bench/http_load.py does for Cody.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    n: int
    delay: float
    sent: int


async def emit(state: State) -> State:
    """Stream ``n`` tokens ``delay`` seconds apart; yield to the loop even when delay is 0."""
    write = get_stream_writer()
    n = int(state.get("n", 1000))
    delay = float(state.get("delay", 0.0))
    for i in range(n):
        write({"i": i, "t": time.time_ns()})
        await asyncio.sleep(delay)
    return {"sent": n}


builder = StateGraph(State)
builder.add_node("emit", emit)
builder.add_edge(START, "emit")
builder.add_edge("emit", END)
graph = builder.compile()
