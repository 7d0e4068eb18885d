"""Process-level tuning of ``cody serve``: the slow-step instrument and the GC settings."""

from __future__ import annotations

import gc
import logging
import time

import pytest
import trio

from runtime.slow_steps import SlowSteps


async def test_a_step_that_holds_the_loop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    slow = SlowSteps(threshold_ms=20)
    trio.lowlevel.add_instrument(slow)
    try:
        with caplog.at_level(logging.WARNING, logger="cody.slow_steps"), trio.fail_after(5):
            await trio.sleep(0.01)  # short steps: nothing logged
            assert slow.slow == 0
            time.sleep(0.05)  # noqa: ASYNC251 - the point: this step holds the loop 50 ms
            await trio.lowlevel.checkpoint()
    finally:
        trio.lowlevel.remove_instrument(slow)
    assert slow.slow >= 1
    assert "held the loop for" in caplog.text


def test_slow_collections_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    slow = SlowSteps(threshold_ms=0)
    slow.watch_gc()
    try:
        with caplog.at_level(logging.WARNING, logger="cody.slow_steps"):
            gc.collect()
    finally:
        slow.unwatch_gc()
    assert "gc of generation 2 took" in caplog.text
    assert slow._on_gc not in gc.callbacks
