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
"""

from __future__ import annotations

from typing import Protocol

from runtime.schema import Payload


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
