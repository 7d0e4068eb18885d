"""The server's GC policy (api/gc_policy.py): young collections only, their survivors frozen,
full collections when idle or at most every ``full_every_s``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from api.gc_policy import NEVER, YoungOnlyGC


class Node:
    """A reference cycle (``self.me``), as a leaked cycle would be."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def restored() -> Iterator[None]:
    """The process's collector as it was: thresholds, nothing frozen by the test."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_install_freezes_startup_objects_and_collects_only_the_young(restored: None) -> None:
    policy = YoungOnlyGC(threshold=300)
    policy.install()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (300, NEVER, NEVER)
        frozen = gc.get_freeze_count()
        survivors = [[i] for i in range(2_000)]  # enough allocations for young collections
        assert policy.young >= 1
        # what survived a young collection is frozen, not left for an older generation
        assert gc.get_freeze_count() > frozen
        assert gc.get_count()[1] >= 0 and len(gc.get_objects(2)) == 0
        del survivors
    finally:
        policy.uninstall()
    assert gc.get_threshold() != (300, NEVER, NEVER)
    assert policy._on_gc not in gc.callbacks


def test_young_cycles_are_collected_and_frozen_ones_by_the_full_collection(
        restored: None) -> None:
    policy = YoungOnlyGC(threshold=300)
    policy.install()
    try:
        young = Node()
        del young
        assert gc.collect(0) >= 1  # a cycle that died young: the young collection finds it
        kept = Node()
        gc.collect(0)  # survives: frozen
        del kept  # now garbage in a frozen cycle: no young collection can see it
        assert gc.collect(0) == 0
        assert policy.full_collection() >= 1
        assert policy.reclaimed >= 1 and policy.full == 1
    finally:
        policy.uninstall()


async def test_full_collections_run_when_idle_or_every_full_every_s(
        restored: None, autojump_clock: trio.testing.MockClock) -> None:
    busy = [True]
    policy = YoungOnlyGC(threshold=300, idle_s=2.0, full_every_s=60.0,
                         clock=trio.current_time)
    policy.install()
    try:
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(policy.run, lambda: busy[0])
                gc.collect(0)
                await trio.sleep(30)
                assert policy.full == 0  # busy, and not yet full_every_s
                await trio.sleep(31)
                assert policy.full == 1  # busy for full_every_s: one anyway
                await trio.sleep(5)
                assert policy.full == 1  # nothing young collected since: nothing to do
                gc.collect(0)
                busy[0] = False
                await trio.sleep(1.0)
                assert policy.full == 1  # idle, not yet idle_s
                await trio.sleep(2.0)
                assert policy.full == 2  # idle idle_s
                nursery.cancel_scope.cancel()
    finally:
        policy.uninstall()
