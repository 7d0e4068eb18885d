"""Request bodies of the thread routes (the run body is ``runtime.turns.TurnRequest``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: Annotated[str, Field(max_length=500)] | None = None
    settings: dict[str, Any] | None = None
    """Model settings for the thread (free-form: model, provider_id, reasoning_effort, ...)."""


class ThreadPatch(ThreadCreate):
    pass


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
