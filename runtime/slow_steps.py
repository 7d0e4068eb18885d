"""A trio instrument that logs task steps that hold the event loop too long.

Everything in one process shares one loop: a step that runs for 20 ms (a big JSON parse, a
synchronous call, a full garbage collection) delays every stream by that much. Latency
targets of a few milliseconds are lost in steps like these, so ``CODY_SLOW_STEP_MS`` turns
this on to find them; off (0) it costs nothing, as it is not installed.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from trio.abc import Instrument
from trio.lowlevel import Task

log = logging.getLogger("cody.slow_steps")


class SlowSteps(Instrument):
    def __init__(self, threshold_ms: float) -> None:
        self.threshold_s = threshold_ms / 1000
        self._started = 0.0
        self._task: Task | None = None
        self.slow = 0
        self._gc_started = 0.0

    def watch_gc(self) -> None:
        """Also log garbage collections that take this long (they stall the loop too)."""
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        if took >= self.threshold_s:
            log.warning("gc of generation %s took %.1f ms (%s collected)",
                        info.get("generation"), took * 1000, info.get("collected"))

    def before_task_step(self, task: Task) -> None:
        self._task = task
        self._started = time.perf_counter()

    def after_task_step(self, task: Task) -> None:
        if task is not self._task:  # the step that installed us began before we could time it
            return
        self._task = None
        took = time.perf_counter() - self._started
        if took >= self.threshold_s:
            self.slow += 1
            frame = task.coro.cr_frame if hasattr(task.coro, "cr_frame") else None
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"
            log.warning("task %s held the loop for %.1f ms (now at %s)", task.name,
                        took * 1000, where)
