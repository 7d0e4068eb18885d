"""``cody serve``'s garbage-collection policy: young collections only, survivors frozen.

Why not CPython's generational defaults: a streaming server keeps hundreds of runs' state
alive for seconds (suspended coroutine stacks, buffers, Responses), so what survives a young
collection is mostly live, and every middle collection walks all of it again. Measured with
bench/serve_gc.py at 300-500 runs x 10 tokens/s (2,000/20/100 thresholds, the earlier
tuning): generation-1 collections took 14-20 ms at p50 and 31-38 ms at their worst, once a
second, and set the p99 of every stream; generation-0 ones 2-3 ms.

The policy: a young collection every ``threshold`` allocations (default 500), and after each,
``gc.freeze()`` - an O(1) splice in CPython that moves what survived into the permanent
generation, which no automatic collection walks. Reference counting still frees frozen
objects the moment they are unreferenced; only garbage *in reference cycles* that formed
after its objects survived a young collection would wait. The runs leave none
(tests/integration/test_no_cycles.py), Hypercorn's connections none once their server
drops its references (api/server.py ``_ConnectionServer``); what is left (a request's
routing closure in werkzeug, a traceback) dies young and is found by the young collection
unless one happens to run at that very moment. That rest is reclaimed by a full collection
(unfreeze, collect, freeze) when the node is idle - no live run - and otherwise at most
every ``full_every_s`` (600 s), the one long pause the policy allows.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

NEVER = 1 << 30
"""A threshold no count reaches: the middle and old generations are never collected
automatically (they are empty: every young collection's survivors are frozen)."""


class YoungOnlyGC:
    """Install with :meth:`install` (process-wide: the collector is one per process); run
    :meth:`run` in the server's nursery for the idle and periodic full collections."""

    def __init__(self, *, threshold: int = 500, idle_s: float = 2.0,
                 full_every_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.idle_s = idle_s
        self.full_every_s = full_every_s
        self._clock = clock
        self._saved: tuple[int, int, int] | None = None
        self.young = 0
        """Young collections since install."""
        self.full = 0
        """Full collections this policy ran."""
        self.reclaimed = 0
        """Objects the full collections found in cycles (what leaked past the young ones)."""
        self._young_at_full = 0
        self._last_full = clock()

    def install(self) -> None:
        """Freeze what start-up made (modules, models, the app) and switch to young-only."""
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.threshold, NEVER, NEVER)
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        """Back to the thresholds found at install (frozen objects stay frozen)."""
        if self._saved is None:
            return
        gc.callbacks.remove(self._on_gc)
        gc.set_threshold(*self._saved)
        self._saved = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # after a young collection its survivors sit in generation 1: freeze them (O(1))
        if phase == "stop" and info.get("generation") == 0 and self._saved is not None:
            self.young += 1
            gc.freeze()

    def full_collection(self) -> int:
        """Collect everything, frozen objects too; returns what was found in cycles."""
        started = self._clock()
        gc.unfreeze()
        try:
            found = gc.collect()
        finally:
            gc.freeze()
        self.full += 1
        self.reclaimed += found
        self._young_at_full = self.young
        self._last_full = self._clock()
        log.debug("full collection: %d objects in cycles, %.1f ms", found,
                  (self._last_full - started) * 1000)
        return found

    def due(self, idle_for_s: float) -> bool:
        """Whether a full collection should run now: something may have been frozen since
        the last one, and the node has been idle ``idle_s`` or ``full_every_s`` passed."""
        if self.young == self._young_at_full:
            return False
        return idle_for_s >= self.idle_s or \
            self._clock() - self._last_full >= self.full_every_s

    async def run(self, busy: Callable[[], bool], *, poll_s: float = 0.5) -> None:
        """Run the full collections: ``busy`` tells whether the node has live runs."""
        idle_since: float | None = None
        while True:
            await trio.sleep(poll_s)
            now = self._clock()
            if busy():
                idle_since = None
            elif idle_since is None:
                idle_since = now
            if self.due(0.0 if idle_since is None else now - idle_since):
                self.full_collection()
