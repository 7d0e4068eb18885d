"""A one_for_one supervisor for the long-lived workers (SPEC §6), after OTP and triotp.

Each child is an async function started with ``nursery.start`` semantics: it calls
``task_status.started()`` once it is ready, and :func:`supervise` reports itself started once
every child has (so whoever starts the supervisor knows the workers are up). When a child
ends, its :class:`RestartPolicy` decides::

    policy      returns normally    raises
    PERMANENT   restarted           restarted
    TRANSIENT   done                restarted
    TEMPORARY   done                logged, done

Only the child that ended is restarted (one_for_one), after an exponential backoff with
jitter (``trio.sleep``, so a ``MockClock`` drives it). Restarts are counted over a sliding
window of ``period_s`` on ``trio.current_time()``, across all children as in OTP; one more than
``max_restarts`` in the window and the supervisor gives up: it cancels the other children and
raises :class:`SupervisorGaveUp`, chained from the last child's exception. Loudly, on purpose:
a worker that cannot stay up must take the process down, not fail silently.

An outage is not a crash. A child that fails with an infrastructure error (Redis or the store
unavailable: :func:`~runtime.errors.is_infrastructure`) is restarted after a capped, jittered
backoff *without* counting toward the restart intensity, for as long as the outage lasts: a
server must outlive its Redis, not give up one second into a restart of it. A child whose
first start fails that way is reported started anyway, so the rest of the server (the HTTP
listener answering ``503``) comes up and the child joins once the dependency is back.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from runtime.errors import SupervisorGaveUp, is_infrastructure

log = logging.getLogger(__name__)

__all__ = ["ChildFn", "ChildSpec", "RestartPolicy", "SupervisorGaveUp", "SupervisorOptions",
           "supervise"]


class RestartPolicy(enum.Enum):
    PERMANENT = "permanent"
    """Always restarted, whether it failed or returned."""
    TRANSIENT = "transient"
    """Restarted only if it failed."""
    TEMPORARY = "temporary"
    """Never restarted."""


class ChildFn(Protocol):
    """An async function that calls ``task_status.started()`` once it is ready."""

    def __call__(self, *, task_status: trio.TaskStatus[None] = ...) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    fn: ChildFn
    policy: RestartPolicy = RestartPolicy.PERMANENT


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    max_restarts: int = 3
    """Restarts allowed within ``period_s``; one more and the supervisor gives up."""
    period_s: float = 5.0
    backoff_base_s: float = 0.1
    """Delay before the first restart; doubled for each further consecutive one."""
    backoff_max_s: float = 5.0
    jitter: float = 0.2
    """Each delay is scaled by a random factor in [1 - jitter, 1 + jitter] (then capped)."""
    rng: random.Random = field(default_factory=random.Random)
    """Seed it for reproducible delays."""
    outage_backoff_max_s: float = 2.0
    """Cap of the delay between retries of a child waiting out an outage: small, so that
    it is back within seconds of its dependency."""

    def backoff(self, attempt: int, cap_s: float | None = None) -> float:
        """The delay before restart number ``attempt`` (1-based) of one child."""
        cap = self.backoff_max_s if cap_s is None else cap_s
        doublings = min(max(attempt - 1, 0), 64)  # bounded: 2.0 ** 1024 overflows
        delay = min(cap, self.backoff_base_s * 2.0 ** doublings)
        if self.jitter:
            delay *= 1 + self.rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(delay, cap))


def _unwrap(exc: BaseException) -> BaseException:
    """The child's own exception, out of the exception groups its nursery put around it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@dataclass(slots=True)
class _Intensity:
    options: SupervisorOptions
    restarts: deque[float] = field(default_factory=deque)

    def allow(self) -> bool:
        """Record a restart now, unless it is one too many for the window."""
        now = trio.current_time()
        while self.restarts and self.restarts[0] <= now - self.options.period_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.options.max_restarts:
            return False
        self.restarts.append(now)
        return True


async def _keep(spec: ChildSpec, options: SupervisorOptions, intensity: _Intensity, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run one child for as long as its policy says, restarting it with backoff."""
    reported = False
    attempt = 0
    waiting = 0  # consecutive infrastructure failures
    while True:
        began = trio.current_time()
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(spec.fn)
                if waiting:  # it could start, so what it waited for is back
                    log.warning("supervisor: %s is back after %d retries", spec.name, waiting)
                    waiting = 0
                if not reported:
                    task_status.started()
                    reported = True
        except Exception as exc:
            failure = exc  # Cancelled is a BaseException: it is never caught here
        if failure is None and spec.policy is not RestartPolicy.PERMANENT:
            log.info("supervisor: %s finished", spec.name)
            break
        cause = _unwrap(failure) if failure is not None else None
        if cause is not None and is_infrastructure(cause):
            waiting += 1
            delay = options.backoff(waiting, options.outage_backoff_max_s)
            (log.warning if waiting == 1 else log.info)(
                "supervisor: %s is waiting for a dependency (%s); retry %d in %.2f s",
                spec.name, cause, waiting, delay)
            if not reported:
                task_status.started()
                reported = True
            await trio.sleep(delay)
            continue
        if spec.policy is RestartPolicy.TEMPORARY:
            log.error("supervisor: temporary child %s failed; not restarting", spec.name,
                      exc_info=cause)
            break
        if not intensity.allow():
            log.critical("supervisor: %s ended more than %d times in %g s; giving up",
                         spec.name, options.max_restarts, options.period_s, exc_info=cause)
            raise SupervisorGaveUp(
                f"child {spec.name!r} ended more than {options.max_restarts} times in "
                f"{options.period_s:g} s; last: {cause!r}",
                details={"child": spec.name,
                         "cause": type(cause).__name__ if cause else None}) from cause
        # a child that stayed up for a whole period starts its backoff over
        attempt = 1 if trio.current_time() - began >= options.period_s else attempt + 1
        delay = options.backoff(attempt)
        log.warning("supervisor: %s %s; restart %d in %.3f s", spec.name,
                    "failed" if cause else "returned", attempt, delay, exc_info=cause)
        await trio.sleep(delay)
    if not reported:
        task_status.started()


async def supervise(children: Sequence[ChildSpec], options: SupervisorOptions | None = None,
                    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Start ``children`` in order, report started, keep them up (one_for_one).

    Returns when no child is left to run (all TRANSIENT/TEMPORARY ones finished).

    Raises:
        SupervisorGaveUp: restart intensity exceeded; the other children are cancelled.
    """
    options = options or SupervisorOptions()
    intensity = _Intensity(options)
    try:
        async with trio.open_nursery() as nursery:
            for spec in children:
                await nursery.start(_keep, spec, options, intensity)
            task_status.started()
    except BaseExceptionGroup as group:
        gave_up = _unwrap(group)
        if isinstance(gave_up, SupervisorGaveUp):
            raise gave_up from gave_up.__cause__
        raise
    except SupervisorGaveUp as gave_up:  # raised by a child's first start, before started()
        raise gave_up from gave_up.__cause__
