"""Every Redis key name Cody Core uses, in one place (SPEC §5).

Per-run keys carry the run id as a Redis Cluster hash tag (literal braces), so that all of a
run's keys live in one slot and can be written in one round trip on a cluster. Nothing here
ever needs a ``KEYS`` scan: each key is found from the id it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "cody"

    #: Consumer group of the persistence projectors on :attr:`persist_stream`.
    projector_group: str = "cody-projector"

    def run_events(self, run_id: str) -> str:
        """The run's event stream: one entry per canonical event, field ``event``."""
        return f"{self.prefix}:run:{{{run_id}}}:events"

    def run_meta(self, run_id: str) -> str:
        """The run's metadata hash (thread, turn, status, owning node, ...)."""
        return f"{self.prefix}:run:{{{run_id}}}:meta"

    def run_keys(self, run_id: str) -> tuple[str, ...]:
        """Every key of one run: what retention expires."""
        return (self.run_events(run_id), self.run_meta(run_id))

    @property
    def persist_stream(self) -> str:
        """The persistence work queue: ``{run_id, seq}`` checkpoints."""
        return f"{self.prefix}:persist"

    @property
    def live_runs(self) -> str:
        """Hash run id -> node id of every run whose actor has not ended (for the janitor)."""
        return f"{self.prefix}:live"

    def node_lease(self, node_id: str) -> str:
        """A node's liveness lease (a string key with a TTL, refreshed by its janitor)."""
        return f"{self.prefix}:node:{{{node_id}}}:lease"
