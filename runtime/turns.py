"""What a client asks for when it submits a turn (SPEC §7 ``POST /runs``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime.ids import canonical_uuid


def _uuid_or_none(value: str | None) -> str | None:
    """A uuid in its canonical spelling (``{u}``, ``urn:uuid:u`` and ``U`` are all ``u``)."""
    if value is None:
        return None
    canonical = canonical_uuid(value)
    if canonical is None:
        raise ValueError("must be a uuid")
    return canonical


class TurnRequest(BaseModel):
    """A turn: a prompt on a thread, a model, tools. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prompt: Annotated[str, Field(min_length=1)]
    model: str | None = None
    provider_id: str | None = None
    thread_id: str | None = None
    turn_id: str | None = None
    run_id: str | None = None
    agent_id: str | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    thinking_budget: Annotated[int, Field(gt=0)] | None = None
    tools: list[str] | None = None
    multitask_strategy: Literal["parallel", "reject", "enqueue", "interrupt"] | None = Field(
        default=None, description="What this turn does if its thread has one running: "
        "parallel (start now), reject (409 THREAD_BUSY), enqueue (queued; starts when the "
        "running turn ends, with it as history), interrupt (the running turn ends aborted, "
        "then this one starts); unset: the server's CODY_MULTITASK_STRATEGY")
    """What this turn does if its thread has one running (runtime/thread_policy.py); unset:
    the server's ``CODY_MULTITASK_STRATEGY``."""

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("thread_id", "turn_id", "run_id", "agent_id")
    @classmethod
    def _ids_are_uuids(cls, value: str | None) -> str | None:
        return _uuid_or_none(value)


class TurnAccepted(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    thread_id: str
    turn_id: str
    events_url: str
    status: Literal["in_progress", "queued"] = Field(
        default="in_progress", description="queued: the turn waits for its thread "
        "(multitask_strategy enqueue or interrupt)")
    """``queued``: the turn waits for its thread (``multitask_strategy`` enqueue or
    interrupt); it starts when the turns ahead of it have ended."""
