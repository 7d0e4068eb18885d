"""The wire protocols Cody speaks, by name: each one's stream normaliser and request builder.

A provider (runtime/catalogue.py) names its protocol; everything protocol-specific that the run
actor needs is looked up here, so a new OpenAI-compatible server is configuration, not code:

======================  ===================================  ================================
protocol                normaliser                           request builder
======================  ===================================  ================================
``openai-responses``    ``OpenAIResponsesNormaliser``        ``build_openai_request``
``anthropic-messages``  ``AnthropicMessagesNormaliser``      ``build_anthropic_request``
``openai-chat``         ``ChatCompletionsNormaliser``        ``build_chat_request``
======================  ===================================  ================================

The live HTTP side of each protocol (path, auth header) is in actors/providers/live.py. This
module is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.providers.anthropic_request import build_anthropic_request
from actors.providers.anthropic_stream import AnthropicMessagesNormaliser
from actors.providers.base import StreamNormaliser, ToolSpec
from actors.providers.chat_request import build_chat_request
from actors.providers.chat_stream import ChatCompletionsNormaliser
from actors.providers.openai_request import build_openai_request
from actors.providers.openai_stream import OpenAIResponsesNormaliser
from actors.providers.settings import RequestSettings
from runtime import OutputItem

NormaliserFactory = Callable[[str], StreamNormaliser]
"""Makes the normaliser of one model request's stream, given the run (response) id."""
RequestBuilder = Callable[[Sequence[OutputItem], Sequence[ToolSpec], RequestSettings],
                          dict[str, Any]]
"""The request body from the conversation so far, the tools and the model settings."""


@dataclass(frozen=True, slots=True)
class WireProtocol:
    name: str
    normaliser: NormaliserFactory
    build_request: RequestBuilder


PROTOCOLS: Mapping[str, WireProtocol] = {
    p.name: p for p in (
        WireProtocol("openai-responses", OpenAIResponsesNormaliser, build_openai_request),
        WireProtocol("anthropic-messages", AnthropicMessagesNormaliser,
                     build_anthropic_request),
        WireProtocol("openai-chat", ChatCompletionsNormaliser, build_chat_request),
    )
}


def protocol(name: str) -> WireProtocol:
    """The protocol called ``name`` (``runtime.catalogue.PROTOCOL_NAMES`` are the same; a test
    pins it).

    Raises:
        KeyError: no such protocol (the catalogue accepts only the names above).
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None
