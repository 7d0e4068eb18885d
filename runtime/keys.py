"""Every Redis key name Cody Core uses, in one place (SPEC §5, §13).

The layout (prefix ``cody``, ``N`` = :attr:`Keys.shards`, default 16)::

    cody:run:{<run_id>}:events     stream   one entry per canonical event (field ``event``)
    cody:run:{<run_id>}:meta       hash     thread, turn, status, owning node, ...
    cody:persist:{<i>}             stream   persist queue shard i (0..N-1), group cody-projector
    cody:live:{<i>}                hash     live-run registry shard i: run id -> node id
    cody:node:{<node_id>}:lease    string   a node's lease, with a TTL its janitor refreshes
    cody:node:{<node_id>}:control  stream   what other nodes tell this one (cancel a run, wake)

    cody:node:{<node_id>}:interrupts list   runs of that node other nodes asked to interrupt
    cody:thread:{<thread_id>}:runs     hash runs holding or waiting for the thread -> node
    cody:thread:{<thread_id>}:running  set  its running turns
    cody:thread:{<thread_id>}:queue    list its queued turns, next first
    cody:thread:{<thread_id>}:ended    list the last turns that ended on it, newest first
    cody:idem:{<sha256(tenant, key)>}  string an Idempotency-Key's record (JSON), with a TTL

Braces are Redis Cluster hash tags: only the part inside them picks the slot. All of a run's
keys share ``{<run_id>}``, so they live in one slot and a Lua script can check and write them
atomically (the janitor's orphan ending). The node-wide queues are split into ``N`` shards,
tagged ``{0}`` .. ``{N-1}``, so that no one cluster node carries every run's checkpoints or
registrations; a run always uses shard :meth:`Keys.shard_of` (CRC-32 of its id, mod ``N``), so
its checkpoints stay in order in one stream. Shard ``i`` of the persist queue and of the
registry share a tag, hence a slot. A node's keys share ``{<node_id>}``: its control stream
(cross-node cancel, and the wake-up of its multiplexed tail, actors/node_tail.py) sits with its
lease.

``N`` is part of the deployment: every node on one Redis must use the same value, and it must
not change while checkpoints are pending (a checkpoint in a shard that no projector reads any
more would wait for ever). Before sharding the queue was one stream ``cody:persist`` and the
registry one hash ``cody:live``; :attr:`Keys.legacy_persist_stream` and
:attr:`Keys.legacy_live_runs` name them so that an upgraded node moves what they hold into the
shards (see ``EventLog.migrate_legacy_persist`` and ``EventLog.migrate_legacy_live``).

Nothing here ever needs a ``KEYS`` scan: each key is found from the id it belongs to, and the
shards are enumerated from ``N``.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

DEFAULT_SHARDS = 16


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "cody"
    shards: int = DEFAULT_SHARDS
    """How many shards the persist queue and the live-run registry are split into."""

    #: Consumer group of the persistence projectors on every persist shard.
    projector_group: str = "cody-projector"
    _persist: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, not {self.shards}")
        object.__setattr__(self, "_persist",
                           tuple(f"{self.prefix}:persist:{{{i}}}" for i in range(self.shards)))

    # ------------------------------------------------------------------ per run

    def run_events(self, run_id: str) -> str:
        """The run's event stream: one entry per canonical event, field ``event``."""
        return f"{self.prefix}:run:{{{run_id}}}:events"

    def run_meta(self, run_id: str) -> str:
        """The run's metadata hash (thread, turn, status, owning node, ...)."""
        return f"{self.prefix}:run:{{{run_id}}}:meta"

    def run_keys(self, run_id: str) -> tuple[str, ...]:
        """Every key of one run: what retention expires."""
        return (self.run_events(run_id), self.run_meta(run_id))

    # ------------------------------------------------------------------ sharded, node-wide

    def shard_of(self, run_id: str) -> int:
        """The shard of a run's checkpoints and registration: stable across processes."""
        return zlib.crc32(run_id.encode()) % self.shards

    def persist_shard(self, shard: int) -> str:
        """Persist queue shard ``shard``: ``{run_id, seq}`` checkpoints."""
        return self._persist[shard]

    @property
    def persist_streams(self) -> tuple[str, ...]:
        """Every persist queue shard, shard 0 first."""
        return self._persist

    def persist_stream_for(self, run_id: str) -> str:
        return self._persist[self.shard_of(run_id)]

    def live_shard(self, shard: int) -> str:
        """Live-run registry shard ``shard``: run id -> node id of runs not ended."""
        return f"{self.prefix}:live:{{{shard}}}"

    def live_runs_for(self, run_id: str) -> str:
        return self.live_shard(self.shard_of(run_id))

    @property
    def live_shards(self) -> tuple[str, ...]:
        return tuple(self.live_shard(i) for i in range(self.shards))

    # ------------------------------------------------------------------ per node

    def node_lease(self, node_id: str) -> str:
        """A node's liveness lease (a string key with a TTL, refreshed by its janitor)."""
        return f"{self.prefix}:node:{{{node_id}}}:lease"

    def node_control(self, node_id: str) -> str:
        """A node's control stream: ``cancel`` requests from other nodes for runs it owns,
        and ``wake`` entries that end its multiplexed tail's blocking read early."""
        return f"{self.prefix}:node:{{{node_id}}}:control"

    def node_interrupts(self, node_id: str) -> str:
        """Runs of ``node_id`` that another node asks it to interrupt (a list of run ids)."""
        return f"{self.prefix}:node:{{{node_id}}}:interrupts"

    # -- policies: per thread (runtime/thread_policy.py), per idempotency key

    def thread_keys(self, thread_id: str) -> tuple[str, str, str, str]:
        """A thread's policy state, one slot (``{<thread_id>}``), so one Lua script decides:
        ``runs`` (hash run -> node: running or queued), ``running`` (set), ``queue`` (list,
        next first), ``ended`` (list of the last run ids that ended, newest first)."""
        base = f"{self.prefix}:thread:{{{thread_id}}}"
        return f"{base}:runs", f"{base}:running", f"{base}:queue", f"{base}:ended"

    def idempotency(self, tenant: str, key: str) -> str:
        """The record of one tenant's ``Idempotency-Key``. The client's key is hashed (with
        the tenant), so whatever characters it holds never reach a key name, and the records
        spread over the cluster's slots."""
        digest = hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()[:32]
        return f"{self.prefix}:idem:{{{digest}}}"

    # -- security: admission

    def tenant_runs(self, tenant: str) -> str:
        """A tenant's running runs, across nodes: a sorted set of run ids scored by the time
        (ms) their slot expires unless its node refreshes it, so a dead node's runs free their
        slots by themselves (README, Security: admission)."""
        return f"{self.prefix}:tenant:{{{tenant}}}:runs"

    # ------------------------------------------------------------------ before sharding

    @property
    def legacy_persist_stream(self) -> str:
        """The single persist stream of earlier versions (migrated into the shards)."""
        return f"{self.prefix}:persist"

    @property
    def legacy_live_runs(self) -> str:
        """The single live-run hash of earlier versions (migrated into the shards)."""
        return f"{self.prefix}:live"
