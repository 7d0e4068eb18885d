"""Redis URLs (one server or a cluster) and how Redis Cluster errors are classified."""

from __future__ import annotations

import pytest
from coredis import exceptions as cx

from runtime.errors import REDIS_ERROR, CodyError, RedisUnavailable
from runtime.eventlog import ClusterURL, is_cluster_url, parse_cluster_url
from runtime.redis_errors import translate


def test_cluster_url_names_seed_nodes() -> None:
    assert parse_cluster_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001,10.0.0.3:7002") \
        == ClusterURL(nodes=(("127.0.0.1", 7000), ("127.0.0.1", 7001), ("10.0.0.3", 7002)))
    assert parse_cluster_url("redis+cluster://h:1") == ClusterURL(nodes=(("h", 1),))
    with_auth = parse_cluster_url("rediss+cluster://me:s%40cret@a:1,b:2/?"
                                  "skip_full_coverage_check=1")
    assert with_auth == ClusterURL(nodes=(("a", 1), ("b", 2)), username="me",
                                   password="s@cret", ssl=True, skip_full_coverage_check=True)
    assert parse_cluster_url("redis+cluster://:pw@[::1]:7000").nodes == (("::1", 7000),)
    assert parse_cluster_url("redis+cluster://:pw@[::1]:7000").password == "pw"
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1/0")


@pytest.mark.parametrize("url", ["redis+cluster://h", "redis+cluster://h:1,:2",
                                 "redis+cluster://h:x", "redis+cluster://h:1/0",
                                 "redis://h:1"])
def test_bad_cluster_urls_say_why(url: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(url)


@pytest.mark.parametrize("exc", [
    cx.ClusterDownError("CLUSTERDOWN The cluster is down"),
    cx.MovedError("3999 127.0.0.1:6381"),
    cx.AskError("3999 127.0.0.1:6381"),
    cx.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    cx.ClusterError("Maximum retries exhausted."),
    cx.ReadOnlyError("READONLY You can't write against a read only replica."),
    cx.ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
    cx.RedisClusterError("Redis Cluster cannot be connected. Please provide at least one "
                         "reachable node."),
    cx.RedisClusterError("Not all slots are covered after attempting to query all startup "
                         "nodes. 10922 of 16384 covered."),
    cx.RedisClusterError("Unable to map slot 12 to a primary node"),
    cx.ClusterResponseError("Inconsistent response from cluster nodes"),
])
def test_a_cluster_that_is_down_moving_or_failing_over_is_unavailable(
        exc: Exception) -> None:
    ours = translate(exc)
    assert isinstance(ours, RedisUnavailable) and ours.status == 503


@pytest.mark.parametrize("exc", [
    cx.ClusterCrossSlotError(command=b"XREAD", keys=("a", "b")),
    cx.ClusterTransactionError("Multiple slots involved in transaction"),
    cx.RedisClusterError("Could not map XREAD request to a node in the cluster"),
    cx.ResponseError("ERR syntax error"),
])
def test_a_cluster_misuse_is_a_bug_not_an_outage(exc: Exception) -> None:
    ours = translate(exc)
    assert type(ours) is CodyError and ours.code == REDIS_ERROR
