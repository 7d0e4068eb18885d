"""Request bodies: JSON only, bounded in size and in nesting depth, validated by a model.

Why a depth limit: ``json.loads`` recurses once per nesting level, so a 4 KB body of 2,000
nested arrays raised ``RecursionError`` (a 500). The body is scanned before it is decoded
(strings are skipped, so brackets inside them do not count); anything deeper than
``max_depth`` is ``400 VALIDATION_ERROR`` naming ``body``, and a ``RecursionError`` that still
escapes the decoder or the model is the same 400.

Why the media type: a browser sends a cross-site ``POST`` with ``Content-Type: text/plain``
without a CORS preflight; requiring ``application/json`` on every body makes that a
``415 UNSUPPORTED_MEDIA_TYPE`` before anything runs (see also api/cors.py).
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from quart import request

from api.errors import validation_failed
from runtime import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(raw: bytes, max_depth: int) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``max_depth`` (strings ignored).

    Cheap for ordinary bodies: one regex pass removes the strings, and only the brackets
    left are looked at."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def is_json_media_type(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/")
                                              and mimetype.endswith("+json"))


async def read_json(model: type[M], *, max_bytes: int, max_depth: int,
                    allow_empty: bool = False) -> M:
    """The request's body as ``model``.

    Raises:
        PayloadTooLarge: over ``max_bytes``.
        UnsupportedMediaType: a body that is not ``application/json``.
        ValidationFailed: empty (unless ``allow_empty``), malformed, too deep, not an object,
            or not what ``model`` accepts (naming the field).
    """
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {max_bytes}",
                              details={"limit": max_bytes})
    data_ = await request.get_data(cache=False, as_text=False)
    raw = data_.encode() if isinstance(data_, str) else data_
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is over {max_bytes} bytes",
                              details={"limit": max_bytes})
    mimetype = request.mimetype
    if not raw.strip():
        if allow_empty and (not mimetype or is_json_media_type(mimetype)):
            return model.model_validate({})
        if mimetype and not is_json_media_type(mimetype):
            raise _unsupported(mimetype)
        raise ValidationFailed("body: a JSON object is required", details={"field": "body"})
    if not is_json_media_type(mimetype):
        raise _unsupported(mimetype)
    if json_depth_exceeds(raw, max_depth):
        raise ValidationFailed(f"body: JSON nested deeper than {max_depth} levels",
                               details={"field": "body", "max_depth": max_depth})
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"body: malformed JSON ({exc})", details={"field": "body"}) from exc
    except RecursionError as exc:
        raise ValidationFailed("body: JSON nested too deeply",
                               details={"field": "body"}) from exc
    if not isinstance(data, dict):
        raise ValidationFailed("body: must be a JSON object", details={"field": "body"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc) from exc
    except RecursionError as exc:
        raise ValidationFailed("body: JSON nested too deeply",
                               details={"field": "body"}) from exc


def _unsupported(mimetype: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"Content-Type: must be application/json, not {mimetype or 'missing'}",
        details={"field": "Content-Type"})
