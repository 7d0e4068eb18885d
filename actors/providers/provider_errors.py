"""Provider failures a user can act on, told apart from the rest (pure).

Every provider reports a refused key, an unknown model or an over-long conversation in its own
words; ``classify`` maps them to one canonical code each, so that a user reads the same thing
whichever server they point Cody at:

=====================  =====================================================================
``PROVIDER_AUTH``      HTTP 401 or 403 (any protocol), or an in-stream error whose code is
                       an authentication one (``invalid_api_key``, ``authentication_error``,
                       ``permission_error``)
``MODEL_NOT_FOUND``    the code ``model_not_found`` (OpenAI), or HTTP 404 whose message
                       speaks of the model (Anthropic ``not_found_error`` "model: …", vLLM
                       "The model `x` does not exist.", Ollama "model \\"x\\" not found"). A 404
                       that does not mention a model (a wrong ``base_url`` path) stays the
                       provider's own error.
``CONTEXT_TOO_LONG``   the code ``context_length_exceeded`` (OpenAI, Groq) or
                       ``exceed_context_size_error`` (llama.cpp), or a message in the words the
                       known servers use: "prompt is too long" (Anthropic), "maximum context
                       length" (OpenAI, vLLM, OpenRouter), "context window", "context size",
                       "context limit", "input token count … exceeds" (Gemini)
=====================  =====================================================================

Anything else keeps the provider's own code. The provider's code always stays in the error's
details as ``provider_code``.

``redact`` is the last line of defence for secrets: provider error bodies are shown to users,
and some echo the key they were sent (OpenAI prints a masked key; a gateway may print it whole).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from runtime import CONTEXT_TOO_LONG, MODEL_NOT_FOUND, PROVIDER_AUTH

_AUTH_CODES = frozenset({"invalid_api_key", "authentication_error", "permission_error",
                         "unauthorized", "forbidden", "invalid_authentication"})
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error",
                            "context_window_exceeded", "string_above_max_length"})
_CONTEXT_WORDS = re.compile(
    r"prompt is too long|maximum context length|context[ _]length|context window"
    r"|context size|context limit|input token count.{0,40}exceeds|too many (input )?tokens",
    re.IGNORECASE)
_MODEL_WORDS = re.compile(r"\bmodel\b", re.IGNORECASE)
_MODEL_NOT_FOUND_CODES = frozenset({"model_not_found"})

REDACTED = "[redacted]"
#: Bearer tokens and ``sk-`` style keys that a provider message may carry, whoever's they are.
_TOKEN_SHAPES = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}|\bsk-[A-Za-z0-9._-]{8,}")


def classify(*, status: int | None, code: str | None, message: str) -> str | None:
    """The canonical code for a provider failure a user can act on, else None.

    Args:
        status: the HTTP status, or None for an error inside a 200 stream.
        code: the provider's own error code or type, if it gave one.
        message: the provider's message.
    """
    lowered = (code or "").lower()
    if status in (401, 403) or lowered in _AUTH_CODES:
        return PROVIDER_AUTH
    if lowered in _MODEL_NOT_FOUND_CODES or (status == 404 and _MODEL_WORDS.search(message)):
        return MODEL_NOT_FOUND
    if lowered in _CONTEXT_CODES or (status in (None, 400, 413, 422)
                                     and _CONTEXT_WORDS.search(message)):
        return CONTEXT_TOO_LONG
    return None


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret, and anything shaped like an API key or a bearer token,
    replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _TOKEN_SHAPES.sub(REDACTED, text)
