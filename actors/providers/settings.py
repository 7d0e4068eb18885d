"""Per-request model settings that every protocol's request builder understands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class RequestSettings:
    """``model_name`` is the provider's own model name (``claude-haiku-4-5``), not Cody's id."""

    model_name: str
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    thinking_budget: int | None = None
    max_output_tokens: int = 8192
