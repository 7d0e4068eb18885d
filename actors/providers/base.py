"""What every provider stream normaliser offers: bytes in, canonical payloads out.

A normaliser is sans-io (like h11): it never reads a socket. The run actor feeds it the raw
bytes of one provider HTTP response body, in whatever chunks arrived, and gets back canonical
payloads for that one model request:

- ``ItemStart`` / ``ItemDelta`` / ``ItemDone`` for each output item (message, reasoning,
  function_call), with the provider's ids passed through;
- ``UsageUpdate`` with this request's usage (the actor sums requests of a tool loop);
- exactly one terminal payload: ``ResponseDone`` (status ``complete`` and a canonical
  finish_reason: ``stop``, ``tool_calls``, ``length``, ``content_filter``, ``refusal``,
  ``pause_turn``) or
  ``ResponseErrorPayload`` (the provider's error code, or MALFORMED_CHUNK, SCHEMA_VIOLATION,
  STREAM_TRUNCATED). After it, ``finished`` is true and further bytes are ignored.

It never raises on bad input: a malformed chunk becomes a ``ResponseErrorPayload``.

The request builders (``*_request.py``) share the two rules every API has alike: which role a
message goes back as, and that a call and its output go back together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from runtime import FunctionCallItem, FunctionCallOutputItem, MessageItem, OutputItem, Payload


class StreamNormaliser(Protocol):
    @property
    def finished(self) -> bool:
        """True once the terminal payload has been emitted."""
        ...

    def feed(self, data: bytes) -> list[Payload]:
        """Consume the next bytes of the provider's response body."""
        ...

    def end_of_stream(self) -> list[Payload]:
        """The body ended. Emits STREAM_TRUNCATED if no terminal event was seen."""
        ...


class ToolSpec(Protocol):
    """What a provider request needs to know of a tool."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, object]:
        """JSON Schema of the tool's arguments object."""
        ...


# ---------------------------------------------------------------------- request bodies

#: The role a message goes back to a provider as when it has no role of its own the API knows.
ORIGIN_ROLE: Mapping[str, str] = {"user": "user", "agent": "assistant", "system": "system"}


def wire_role(item: MessageItem, roles: Mapping[str, str]) -> str:
    """The role ``item`` goes back to a provider as: its own role through ``roles`` (the roles
    the API knows, each to what it sends), else the one its origin implies."""
    if item.role is not None and item.role in roles:
        return roles[item.role]
    return ORIGIN_ROLE[item.origin]


def call_ids(items: Sequence[OutputItem]) -> tuple[set[str], set[str]]:
    """The ids of the calls in ``items`` and of the outputs: a call goes back only with its
    output and an output only with its call, as the APIs reject either half alone."""
    called = {i.call_id for i in items if isinstance(i, FunctionCallItem)}
    answered = {i.call_id for i in items if isinstance(i, FunctionCallOutputItem)}
    return called, answered
