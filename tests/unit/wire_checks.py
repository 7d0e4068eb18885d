"""What the request and fixture tests (``test_*_request.py``, ``test_*_fixtures.py``) share:
the SDK check of a request body, a tool spec, the conversation's messages. Not a test module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

from runtime.schema import MessageItem


def _materialise(value: Any) -> Any:
    if isinstance(value, BaseModel):  # matched a response model, not a request param
        return {"__model__": type(value).__name__}
    if isinstance(value, dict):
        return {k: _materialise(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return [_materialise(v) for v in value]  # lists and pydantic's lazy validator iterators


def sdk_accepts(adapter: TypeAdapter[Any], body: dict[str, Any]) -> None:
    """Raises ``ValidationError`` or ``AssertionError`` unless the SDK's create params
    (``adapter``) accept ``body`` as is: the TypedDict validates lazily and drops unknown keys,
    so everything is iterated and the result must equal the input."""
    validated = _materialise(adapter.validate_python(body))
    assert validated == body, "the SDK dropped or changed part of the request"


@dataclass(frozen=True)
class Spec:
    """A tool as a request builder sees it (``actors.providers.base.ToolSpec``)."""

    name: str
    description: str
    parameters: dict[str, object]


def user(text: str, n: int = 0) -> MessageItem:
    return MessageItem(id=f"u{n}:prompt", origin="user", role="user", content=text)


def agent(text: str, n: int = 0) -> MessageItem:
    return MessageItem(id=f"msg_{n}", origin="agent", role="assistant", content=text)
