"""The canonical stream and the Response it folds into (SPEC §2-3).

Every model is strict (unknown fields are rejected) and frozen: events are values, never
mutated or subclassed for behaviour. ``model_dump_json`` of any model, parsed back and dumped
again, gives the same bytes, which is what lets Redis hold the exact JSON a client receives.

This module is pure: it imports neither trio nor coredis.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

NonEmptyStr = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    """Base of every schema model: unknown fields rejected, instances immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------- shared values


class ErrorInfo(Strict):
    code: NonEmptyStr
    message: str
    details: dict[str, Any] | None = None


class Usage(Strict):
    """Token usage, summed over the model requests of a turn.

    ``prompt_tokens`` counts every input token, cached and cache-written ones included;
    ``completion_tokens`` every output token, reasoning included. The breakdowns are kept when
    the provider reports them (None when it does not). Where each comes from:

    - ``reasoning_tokens``: OpenAI Responses ``output_tokens_details.reasoning_tokens``, Chat
      Completions ``completion_tokens_details.reasoning_tokens``, Anthropic
      ``output_tokens_details.thinking_tokens`` (in ``message_delta``'s usage);
    - ``cached_tokens`` (input read from the prompt cache): Responses
      ``input_tokens_details.cached_tokens``, Chat ``prompt_tokens_details.cached_tokens``,
      Anthropic ``cache_read_input_tokens``;
    - ``cache_write_tokens`` (input written to the prompt cache): Responses
      ``input_tokens_details.cache_write_tokens``, Chat
      ``prompt_tokens_details.cache_write_tokens``, Anthropic ``cache_creation_input_tokens``.
    """

    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count
    reasoning_tokens: Count | None = None
    cached_tokens: Count | None = None
    cache_write_tokens: Count | None = None

    def __add__(self, other: Usage) -> Usage:
        def opt(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            reasoning_tokens=opt(self.reasoning_tokens, other.reasoning_tokens),
            cached_tokens=opt(self.cached_tokens, other.cached_tokens),
            cache_write_tokens=opt(self.cache_write_tokens, other.cache_write_tokens),
        )


class TraceContext(Strict):
    """W3C trace context; one trace per run."""

    traceparent: Annotated[
        str, Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    ]
    tracestate: str | None = None


# --------------------------------------------------------------------------- output items

ItemType = Literal["message", "reasoning", "function_call", "function_call_output", "cancelled",
                   "error"]


class _ItemBase(Strict):
    id: NonEmptyStr
    correlation_id: str | None = None


class MessageItem(_ItemBase):
    type: Literal["message"] = "message"
    origin: Literal["user", "agent", "system"]
    content: str
    role: str | None = None


class ReasoningItem(_ItemBase):
    """Reasoning keeps what the provider needs back next turn: Anthropic's ``signature``,
    redacted thinking data (in ``encrypted_content`` with ``redacted`` set), OpenAI's
    ``encrypted_content``."""

    type: Literal["reasoning"] = "reasoning"
    origin: Literal["agent", "system"]
    content: str
    signature: str | None = None
    encrypted_content: str | None = None
    redacted: bool | None = None


class FunctionCallItem(_ItemBase):
    type: Literal["function_call"] = "function_call"
    origin: Literal["agent"] = "agent"
    name: NonEmptyStr
    arguments: str
    call_id: NonEmptyStr


class FunctionCallOutputItem(_ItemBase):
    type: Literal["function_call_output"] = "function_call_output"
    origin: Literal["system", "tool_harness"]
    call_id: NonEmptyStr
    output: str
    success: bool


class CancelledItem(_ItemBase):
    type: Literal["cancelled"] = "cancelled"
    origin: Literal["agent", "system", "user"]
    reason: str | None = None


class ErrorItem(_ItemBase):
    type: Literal["error"] = "error"
    origin: Literal["agent", "system", "provider"]
    code: NonEmptyStr
    message: str
    details: dict[str, Any] | None = None


OutputItem: TypeAlias = Annotated[
    MessageItem | ReasoningItem | FunctionCallItem | FunctionCallOutputItem | CancelledItem
    | ErrorItem,
    Field(discriminator="type"),
]

# --------------------------------------------------------------------------- payloads

ResponseStatus = Literal["queued", "in_progress", "complete", "error", "aborted"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"complete", "error", "aborted"})


class ResponseStart(Strict):
    type: Literal["response_start"] = "response_start"
    response_id: NonEmptyStr
    turn_id: NonEmptyStr
    thread_id: NonEmptyStr
    agent_id: str | None = None
    model_id: NonEmptyStr
    provider_id: NonEmptyStr
    created_at: Count


class ItemStart(Strict):
    type: Literal["item_start"] = "item_start"
    item_id: NonEmptyStr
    item_type: ItemType
    initial_content: str | None = None
    name: str | None = None
    arguments: str | None = None
    call_id: str | None = None


class ItemDelta(Strict):
    type: Literal["item_delta"] = "item_delta"
    item_id: NonEmptyStr
    delta_content: str


class ItemDone(Strict):
    type: Literal["item_done"] = "item_done"
    item_id: NonEmptyStr
    final_item: OutputItem


class ItemErrorPayload(Strict):
    type: Literal["item_error"] = "item_error"
    item_id: NonEmptyStr
    error: ErrorInfo


class ItemCancelled(Strict):
    type: Literal["item_cancelled"] = "item_cancelled"
    item_id: NonEmptyStr
    reason: str | None = None


class UsageUpdate(Strict):
    type: Literal["usage_update"] = "usage_update"
    response_id: NonEmptyStr
    usage: Usage


class ResponseDone(Strict):
    type: Literal["response_done"] = "response_done"
    response_id: NonEmptyStr
    status: Literal["complete", "error", "aborted"]
    usage: Usage | None = None
    finish_reason: str | None


class ResponseErrorPayload(Strict):
    type: Literal["response_error"] = "response_error"
    response_id: NonEmptyStr
    error: ErrorInfo


class TurnAbortedByUser(Strict):
    type: Literal["turn_aborted_by_user"] = "turn_aborted_by_user"
    turn_id: NonEmptyStr
    reason: str


class Heartbeat(Strict):
    type: Literal["heartbeat"] = "heartbeat"


Payload: TypeAlias = Annotated[
    ResponseStart | ItemStart | ItemDelta | ItemDone | ItemErrorPayload | ItemCancelled
    | UsageUpdate | ResponseDone | ResponseErrorPayload | TurnAbortedByUser | Heartbeat,
    Field(discriminator="type"),
]

#: Event types after which a run's stream gets no more events.
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"response_done", "response_error"})

# --------------------------------------------------------------------------- envelope


class StreamEvent(Strict):
    """One canonical event, as stored in the run's Redis stream (field ``event``)."""

    event_id: Annotated[str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                           r"[0-9a-f]{12}$")]
    run_id: NonEmptyStr
    seq: Annotated[int, Field(ge=1)]
    timestamp: Count
    trace_context: TraceContext
    type: str
    payload: Payload

    @model_validator(mode="after")
    def _type_matches_payload(self) -> StreamEvent:
        if self.type != self.payload.type:
            raise ValueError(f"type {self.type!r} does not match payload.type "
                             f"{self.payload.type!r}")
        return self


# --------------------------------------------------------------------------- response


class Response(Strict):
    id: NonEmptyStr
    turn_id: NonEmptyStr
    thread_id: NonEmptyStr
    agent_id: str | None = None
    model_id: NonEmptyStr
    provider_id: NonEmptyStr
    created_at: Count
    updated_at: Count
    status: ResponseStatus
    output_items: tuple[OutputItem, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    error: ErrorInfo | None = None


PAYLOAD_ADAPTER: TypeAdapter[Payload] = TypeAdapter(Payload)
OUTPUT_ITEM_ADAPTER: TypeAdapter[OutputItem] = TypeAdapter(OutputItem)
