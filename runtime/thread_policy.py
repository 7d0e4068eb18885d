"""Thread policies: what a turn sent to a thread that has one running does (pure).

``multitask_strategy`` on a submit (default ``CODY_MULTITASK_STRATEGY``, else ``parallel``):

- ``parallel``: it starts now, beside the running ones (each sees the thread's *finished*
  turns as history), as before policies existed;
- ``reject``: ``409 THREAD_BUSY`` while the thread has a turn running or queued;
- ``enqueue``: it is accepted at once (``202``, status ``queued``) and starts when every turn
  ahead of it has ended, seeing them as history; queued turns start one at a time, in order;
- ``interrupt``: every running turn ends ``aborted`` (finish reason :data:`INTERRUPTED`, its
  terminal event written), and the new turn starts first, before any queued one, with the
  finished part of the interrupted turns as history.

The state of one thread is :class:`ThreadState`: the runs holding it (``running``), the runs
waiting (``queue``, next first) and the node of each. The Redis twin of this model is a pair of
Lua scripts on the thread's hash-tagged keys (``actors/thread_policies.py``), so the decision
is atomic across nodes; the tests run the same sequences through both and compare.

Invariant kept by :meth:`ThreadState.release`: the queue is not empty only while some run is
running (the head is promoted the moment the last running run ends). A run that dies with
its node is ended by the janitor (``RUN_ORPHANED``), which releases it like any other ending,
so a queue never waits on a dead run for longer than the node lease.

Decisions where the issue is silent:

- "Busy" means a run is running or queued on the thread, whichever node runs it.
- A ``parallel`` turn also holds the thread while it runs: a later ``reject`` sees it, a
  later ``enqueue`` waits for it, an ``interrupt`` aborts it.
- A queued turn that is cancelled before it starts ends ``aborted`` at once and leaves the
  queue; it never calls the model.
- History: the thread's finished turns in order - complete ones, and interrupted ones with
  their finished part (items done before the interruption, minus tool calls whose output had
  not come: a provider refuses a call without its result). A turn cancelled by the user or
  ended by an error is not history (as before).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from runtime.schema import OutputItem, Response

Strategy = Literal["parallel", "reject", "enqueue", "interrupt"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

INTERRUPTED = "interrupted"
"""The abort reason (and so the ``finish_reason``) of a turn ended by an ``interrupt``."""

Decision = Literal["start", "busy", "queued", "interrupt"]


@dataclass(frozen=True, slots=True)
class Admission:
    """What a submit may do. ``start``: run now. ``busy``: refuse (reject); ``running`` are
    the runs in the way. ``queued``: wait for its turn (``position`` 1 is next).
    ``interrupt``: wait for its turn, first in line, after ``running`` (run id, node) are
    aborted."""

    decision: Decision
    running: tuple[tuple[str, str], ...] = ()
    position: int = 0

    @property
    def waits(self) -> bool:
        return self.decision in ("queued", "interrupt")


@dataclass(frozen=True, slots=True)
class Promotion:
    """The run whose turn it now is, its node, and the runs that last ended on the thread
    (newest first: the history it must see even if the store is behind)."""

    run_id: str
    node: str
    ended: tuple[str, ...] = ()


ENDED_KEPT = 16
"""How many ended run ids a thread remembers for the next turn's history."""


@dataclass(slots=True)
class ThreadState:
    """One thread's policy state; the reference for the Lua scripts."""

    nodes: dict[str, str] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    queue: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.queue)

    def admit(self, run_id: str, node: str, strategy: Strategy) -> Admission:
        """Decide for a new run (``run_id`` must be new to the thread)."""
        if strategy == "parallel" or not self.busy:
            self.nodes[run_id] = node
            self.running.add(run_id)
            return Admission("start")
        in_the_way = tuple(sorted((r, self.nodes.get(r, "")) for r in self.running))
        if strategy == "reject":
            return Admission("busy", in_the_way)
        self.nodes[run_id] = node
        if strategy == "enqueue":
            self.queue.append(run_id)
            return Admission("queued", position=len(self.queue))
        self.queue.insert(0, run_id)
        return Admission("interrupt", in_the_way, position=1)

    def release(self, run_id: str) -> Promotion | None:
        """``run_id`` ended (or left the queue): forget it, and if nothing runs any more,
        promote the next queued run. Idempotent."""
        known = self.nodes.pop(run_id, None) is not None
        was_running = run_id in self.running
        self.running.discard(run_id)
        self.queue = [r for r in self.queue if r != run_id]
        if known and was_running:
            self.ended = [run_id, *[r for r in self.ended if r != run_id]][:ENDED_KEPT]
        if not self.running and self.queue:
            head = self.queue.pop(0)
            self.running.add(head)
            return Promotion(head, self.nodes.get(head, ""), tuple(self.ended))
        return None


def parse_admission(reply: Sequence[str]) -> Admission:
    """The admission script's reply: ``[decision, position, run, node, run, node, ...]``.

    Raises:
        ValueError: not a reply the script gives.
    """
    if len(reply) < 2 or reply[0] not in get_args(Decision) or len(reply) % 2:
        raise ValueError(f"unexpected admission reply {reply!r}")
    pairs = tuple(sorted(zip(reply[2::2], reply[3::2], strict=True)))
    return Admission(reply[0], pairs, int(reply[1]))  # type: ignore[arg-type]


def parse_promotion(reply: Sequence[str]) -> Promotion | None:
    """The release script's reply: ``[]`` or ``[run, node, ended...]``."""
    if not reply:
        return None
    if len(reply) < 2:
        raise ValueError(f"unexpected release reply {reply!r}")
    return Promotion(reply[0], reply[1], tuple(reply[2:]))


# ---------------------------------------------------------------------- history


def finished_part(response: Response) -> list[OutputItem]:
    """What of a turn the next one sees: its items, without error and cancelled items, and
    without tool calls that have no output (an interrupted turn may stop between the two)."""
    answered = {i.call_id for i in response.output_items if i.type == "function_call_output"}
    return [i for i in response.output_items
            if i.type not in ("error", "cancelled")
            and (i.type != "function_call" or i.call_id in answered)]


def is_history(response: Response) -> bool:
    """Whether a turn counts as history: complete, or aborted by an ``interrupt``."""
    return response.status == "complete" or (
        response.status == "aborted" and response.finish_reason == INTERRUPTED)


def history_items(responses: Iterable[Response]) -> list[OutputItem]:
    """The thread's earlier turns (in order) as the provider must see them again."""
    return [item for r in responses if is_history(r) for item in finished_part(r)]
