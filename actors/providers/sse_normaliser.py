"""What the provider normalisers share: the SSE decoder, the terminal state, how a
failure becomes the stream's one ``response_error``, and the field check every event handler
uses. Each subclass parses its own provider's events in ``_message``. Pure, like them."""

from __future__ import annotations

from typing import Any, ClassVar

from runtime import (
    STREAM_TRUNCATED,
    ErrorInfo,
    Payload,
    ResponseErrorPayload,
    SSEDecoder,
    SSEMessage,
)


class Violation(Exception):
    """A known event lacks a field it needs, or has one of the wrong type."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def require_dict(obj: dict[str, Any], field: str) -> dict[str, Any]:
    value = obj.get(field)
    if type(value) is not dict:
        raise Violation(field)
    return value


class SSENormaliser:
    """The ``StreamNormaliser`` frame: SSE messages in, ``_message`` appends payloads."""

    __slots__ = ("_decoder", "_finished", "_response_id")

    PROVIDER: ClassVar[str]
    """The provider's id, in every error's message and details."""
    ENDS_WITH: ClassVar[str]
    """The event a complete stream ends with, for the STREAM_TRUNCATED message."""

    def __init__(self, response_id: str) -> None:
        self._response_id = response_id
        self._decoder = SSEDecoder()
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, data: bytes) -> list[Payload]:
        out: list[Payload] = []
        if self._finished:
            return out
        for message in self._decoder.feed(data):
            self._message(message, out)
            if self._finished:
                break
        return out

    def end_of_stream(self) -> list[Payload]:
        out: list[Payload] = []
        if self._finished:
            return out
        for message in self._decoder.close():
            self._message(message, out)
            if self._finished:
                return out
        self._body_ended(out)
        return out

    def _body_ended(self, out: list[Payload]) -> None:
        """The body ended and no message finished the stream: STREAM_TRUNCATED. A provider
        whose servers may end a complete stream without its terminal event overrides this."""
        self._fail(out, STREAM_TRUNCATED,
                   f"{self.PROVIDER} stream: the response body ended before {self.ENDS_WITH}",
                   {})

    def _message(self, message: SSEMessage, out: list[Payload]) -> None:
        raise NotImplementedError

    def _fail(self, out: list[Payload], code: str, message: str,
              details: dict[str, Any]) -> None:
        out.append(ResponseErrorPayload(
            response_id=self._response_id,
            error=ErrorInfo(code=code, message=message,
                            details={"provider": self.PROVIDER, **details})))
        self._finished = True
