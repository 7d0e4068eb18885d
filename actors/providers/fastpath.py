"""The per-token shortcuts the provider normalisers share.

One provider event per token makes ``json.loads`` and pydantic validation the bulk of a
normaliser's cost; these two functions cut each to about a third. This module is pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from runtime import ItemDelta

scan: Callable[[str, int], tuple[Any, int]]
scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
scanstring: Callable[[str, int], tuple[str, int]]
scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
"""The C string decoder: ``scanstring(s, i)`` reads the JSON string whose opening quote is at
``i - 1``, returns it and the index after its closing quote (ValueError if it is not one)."""

# The slots ``BaseModel.model_construct`` fills, set through their descriptors (as
# runtime/envelope.py does).
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def loads(data: str) -> Any:
    """``json.loads`` without its two Python layers (a third of a small event's cost): the
    C scanner parses the usual compact value; anything unusual (surrounding whitespace,
    trailing data, bad JSON) goes to ``json.loads`` for its verdict."""
    try:
        obj, end = scan(data, 0)
    except StopIteration:
        return json.loads(data)
    if end != len(data):
        return json.loads(data)
    return obj


def new_delta(item_id: str, text: str) -> ItemDelta:
    """``ItemDelta(item_id=item_id, delta_content=text)`` for values already checked.

    One of these is made per token, so it skips validation, and even ``model_construct``
    (a loop over the fields that costs three times as much): it sets what
    ``model_construct`` sets. The normalisers' tests check that the result equals, dumps and
    hashes like a validated ``ItemDelta``, so a pydantic upgrade that changes these internals
    fails loudly.
    """
    delta: ItemDelta = _new(ItemDelta)
    _set_dict(delta, {"type": "item_delta", "item_id": item_id, "delta_content": text})
    _set_fields_set(delta, {"type", "item_id", "delta_content"})
    _set_extra(delta, None)
    _set_private(delta, None)
    return delta
