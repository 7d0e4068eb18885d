"""The one_for_one supervisor, on trio's MockClock: no real sleeps, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import CodyError
from runtime.supervisor import (
    ChildFn,
    ChildSpec,
    RestartPolicy,
    SupervisorGaveUp,
    SupervisorOptions,
    supervise,
)


class Boom(Exception):
    pass


def no_jitter(**more: float) -> SupervisorOptions:
    return SupervisorOptions(jitter=0.0, **more)  # type: ignore[arg-type]


class Child:
    """A scripted child: ``script(n)`` says what start number ``n`` (from 1) does."""

    def __init__(self, script: Callable[[int], str], *, ready_after_s: float = 0.0) -> None:
        self.script = script
        self.ready_after_s = ready_after_s
        self.starts: list[float] = []
        self.cancelled = 0

    async def __call__(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                       ) -> None:
        self.starts.append(trio.current_time())
        action = self.script(len(self.starts))
        if action == "fail_at_start":
            raise Boom(f"start {len(self.starts)}")
        await trio.sleep(self.ready_after_s)
        task_status.started()
        try:
            if action == "fail":
                raise Boom(f"run {len(self.starts)}")
            if action == "return":
                return
            if action.startswith("fail_after:"):
                await trio.sleep(float(action.split(":")[1]))
                raise Boom(f"run {len(self.starts)}")
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled += 1
            raise


def spec(name: str, child: ChildFn, policy: RestartPolicy = RestartPolicy.PERMANENT
         ) -> ChildSpec:
    return ChildSpec(name, child, policy)


async def test_failed_child_is_restarted(autojump_clock: trio.testing.MockClock) -> None:
    child = Child(lambda n: "fail" if n <= 2 else "run")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("worker", child)], no_jitter())
            await trio.sleep(10)
            assert len(child.starts) == 3
            nursery.cancel_scope.cancel()
    assert child.cancelled == 1


async def test_backoff_grows_then_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    child = Child(lambda n: "fail" if n <= 7 else "run")
    options = no_jitter(max_restarts=100, period_s=1000.0, backoff_base_s=0.1,
                        backoff_max_s=1.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("worker", child)], options)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    gaps = [round(b - a, 6) for a, b in zip(child.starts, child.starts[1:], strict=False)]
    assert gaps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


async def test_child_up_for_a_whole_period_starts_backoff_over(
        autojump_clock: trio.testing.MockClock) -> None:
    # fails at once twice, then after 10 s (longer than the 5 s period), then at once again
    plan = {1: "fail", 2: "fail", 3: "fail_after:10", 4: "fail", 5: "run"}
    child = Child(lambda n: plan[n])
    options = no_jitter(max_restarts=10, period_s=5.0, backoff_base_s=0.1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("worker", child)], options)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    gaps = [round(b - a, 6) for a, b in zip(child.starts, child.starts[1:], strict=False)]
    assert gaps == [0.1, 0.2, 10.1, 0.2]


async def test_intensity_exceeded_gives_up_loudly(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    failing = Child(lambda n: "fail")
    sibling = Child(lambda n: "run")
    with trio.fail_after(60), pytest.raises(SupervisorGaveUp) as info:
        await supervise([spec("sibling", sibling), spec("failing", failing)],
                        no_jitter(max_restarts=3, period_s=5.0))
    assert len(failing.starts) == 4  # the first run and 3 restarts
    assert isinstance(info.value.__cause__, Boom)
    assert info.value.code == "SUPERVISOR_GAVE_UP"
    assert isinstance(info.value, CodyError)
    assert info.value.details is not None and info.value.details["child"] == "failing"
    assert sibling.cancelled == 1 and len(sibling.starts) == 1


async def test_failures_spread_wider_than_the_period_never_give_up(
        autojump_clock: trio.testing.MockClock) -> None:
    child = Child(lambda n: "fail_after:10")
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("worker", child)],
                                no_jitter(max_restarts=1, period_s=5.0))
            await trio.sleep(200)
            nursery.cancel_scope.cancel()
    assert len(child.starts) > 15


async def test_transient_not_restarted_after_normal_exit(
        autojump_clock: trio.testing.MockClock) -> None:
    child = Child(lambda n: "fail" if n == 1 else "return")
    with trio.fail_after(60):
        await supervise([spec("worker", child, RestartPolicy.TRANSIENT)], no_jitter())
    assert len(child.starts) == 2  # restarted after the failure, not after returning


async def test_permanent_restarted_after_normal_exit(
        autojump_clock: trio.testing.MockClock) -> None:
    child = Child(lambda n: "return" if n <= 2 else "run")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("worker", child)], no_jitter())
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
    assert len(child.starts) == 3


@pytest.mark.parametrize("action", ["fail", "return", "fail_at_start"])
async def test_temporary_never_restarted(autojump_clock: trio.testing.MockClock,
                                         action: str) -> None:
    child = Child(lambda n: action)
    other = Child(lambda n: "run")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("temp", child, RestartPolicy.TEMPORARY),
                                            spec("other", other)], no_jitter())
            await trio.sleep(10)
            assert len(child.starts) == 1
            assert len(other.starts) == 1 and other.cancelled == 0  # untouched
            nursery.cancel_scope.cancel()


async def test_started_only_once_every_child_is_ready(
        autojump_clock: trio.testing.MockClock) -> None:
    slow = Child(lambda n: "run", ready_after_s=3.0)
    slower = Child(lambda n: "run", ready_after_s=4.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            await nursery.start(supervise, [spec("a", slow), spec("b", slower)], no_jitter())
            assert trio.current_time() - t0 == pytest.approx(7.0)  # in order, like OTP
            nursery.cancel_scope.cancel()


async def test_child_failing_to_start_is_retried_before_started(
        autojump_clock: trio.testing.MockClock) -> None:
    child = Child(lambda n: "fail_at_start" if n <= 2 else "run")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("worker", child)], no_jitter())
            assert len(child.starts) == 3
            nursery.cancel_scope.cancel()


async def test_child_that_never_starts_gives_up(autojump_clock: trio.testing.MockClock
                                                ) -> None:
    child = Child(lambda n: "fail_at_start")
    with trio.fail_after(60), pytest.raises(SupervisorGaveUp) as info:
        await supervise([spec("worker", child)], no_jitter(max_restarts=2))
    assert isinstance(info.value.__cause__, Boom)
    assert len(child.starts) == 3


async def test_no_children_left_returns(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        await supervise([spec("a", Child(lambda n: "return"), RestartPolicy.TRANSIENT),
                         spec("b", Child(lambda n: "fail"), RestartPolicy.TEMPORARY)])


async def test_jittered_delays_are_seeded_and_bounded(
        autojump_clock: trio.testing.MockClock) -> None:
    def gaps(seed: int) -> list[float]:
        opts = SupervisorOptions(rng=random.Random(seed), jitter=0.2, backoff_base_s=0.1,
                                 backoff_max_s=1.0)
        return [opts.backoff(n) for n in range(1, 10)]

    assert gaps(7) == gaps(7)
    assert gaps(7) != gaps(8)
    for n, delay in enumerate(gaps(7), start=1):
        nominal = min(1.0, 0.1 * 2 ** (n - 1))
        assert 0.8 * nominal <= delay <= min(1.2 * nominal, 1.0)


@settings(max_examples=50, deadline=None)
@given(attempt=st.integers(0, 100_000), base=st.floats(0.0, 10.0), cap=st.floats(0.0, 60.0),
       jitter=st.floats(0.0, 1.0), seed=st.integers())
def test_backoff_never_negative_nor_past_the_cap(attempt: int, base: float, cap: float,
                                                 jitter: float, seed: int) -> None:
    opts = SupervisorOptions(backoff_base_s=base, backoff_max_s=cap, jitter=jitter,
                             rng=random.Random(seed))
    assert 0.0 <= opts.backoff(attempt) <= cap


class Outage:
    """A child that fails with RedisUnavailable until ``until`` (trio time), then runs."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.starts = 0

    async def __call__(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                       ) -> None:
        from runtime.errors import RedisUnavailable

        self.starts += 1
        if trio.current_time() < self.until:
            raise RedisUnavailable("down")
        task_status.started()
        await trio.sleep_forever()


async def test_an_outage_is_waited_out_not_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    """60 s of RedisUnavailable at start: the supervisor reports started at once (so the
    HTTP server comes up), retries at most outage_backoff_max_s apart, never gives up, and
    the child runs within that cap of the dependency's return."""
    child = Outage(until=60.0)
    options = no_jitter(max_restarts=3, period_s=5.0)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, [spec("projector", child)], options)
            assert trio.current_time() < 1.0
            await trio.sleep(60.0 + options.outage_backoff_max_s + 0.01)
            ran = child.starts
            await trio.sleep(30.0)
            assert child.starts == ran  # running, not restarting
            assert ran > options.max_restarts + 1  # far more retries than crashes allowed
            nursery.cancel_scope.cancel()
