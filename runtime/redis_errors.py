"""Translating coredis's errors into ours, at the boundary (STYLE habit 7).

Everything that means "Redis cannot be used right now" - no connection, a timeout, a server
still loading its AOF, refused credentials, a cluster that is down, has slots moving or is
failing over - becomes :class:`~runtime.errors.RedisUnavailable` (503), which callers may
retry. Any other Redis error (a wrong type, a syntax error, one command's keys in different
cluster slots) is a bug, not an outage, and becomes a plain :class:`~runtime.errors.CodyError`
with code ``REDIS_ERROR`` so that nobody retries it.

coredis runs its connections in task groups, so an error may arrive wrapped in an exception
group; a group made only of such errors is translated like its first leaf.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import trio
from coredis import exceptions as cx

from runtime.errors import REDIS_ERROR, CodyError, RedisUnavailable

#: Errors that mean the server cannot be reached or cannot serve right now.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    cx.ConnectionError,  # includes ProtocolError and BusyLoadingError (AOF still loading)
    cx.InvalidResponse,  # something that is not Redis answered
    cx.ClusterDownError,  # CLUSTERDOWN: some slot is not served
    cx.ClusterError,  # redirections or retries exhausted (slots moving, node down)
    cx.ClusterRoutingError,
    cx.ClusterResponseError,  # a command sent to every node (PING) that some could not answer
    cx.AskError,  # includes MovedError: a slot still moving once coredis gave up following
    cx.TryAgainError,  # a multi-key command during resharding
    cx.ReadOnlyError,  # failover in progress: a replica answered for its old primary
    cx.AuthenticationError,
    cx.AuthorizationError,
    TimeoutError,  # connect, stream and pool timeouts
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    trio.ClosedResourceError,
    trio.BrokenResourceError,
)


#: ``RedisClusterError`` itself (not its subclasses) says "no usable cluster layout" - no seed
#: node reachable, slots not covered, a slot with no node - except for these, which are ours.
_CLUSTER_BUGS = ("Could not map", "No way to dispatch")
#: Replies of a server that cannot serve writes right now (a replica cut off from its primary,
#: ``min-replicas-to-write`` not met).
_UNAVAILABLE_REPLIES = ("MASTERDOWN", "NOREPLICAS")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE):
        return True
    if type(exc) is cx.RedisClusterError:
        return not str(exc).startswith(_CLUSTER_BUGS)
    if isinstance(exc, cx.ResponseError):
        return str(exc).startswith(_UNAVAILABLE_REPLIES)
    return False


def translate(exc: BaseException) -> CodyError | None:
    """Our error for a foreign one, or ``None`` when it is not a Redis error at all."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        mapped = [translate(leaf) for leaf in leaves]
        if not leaves or any(m is None for m in mapped):
            return None  # mixed with something else (e.g. Cancelled): leave it alone
        return mapped[0]
    if isinstance(exc, CodyError):
        return None
    if _unavailable(exc):
        return RedisUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}",
                                details={"cause": type(exc).__name__})
    if isinstance(exc, cx.RedisError):
        return CodyError(f"Redis error: {type(exc).__name__}: {exc}", code=REDIS_ERROR,
                         details={"cause": type(exc).__name__})
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def map_redis_errors() -> Iterator[None]:
    """``with map_redis_errors(): await client.xadd(...)`` - only our errors come out."""
    try:
        yield
    except BaseException as exc:
        ours = translate(exc)
        if ours is None:
            raise
        raise ours from exc
