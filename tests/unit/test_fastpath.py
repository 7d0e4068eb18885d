"""The normalisers' fast paths (actors/providers/fastpath.py): a delta built without
validation is a real ``ItemDelta``, and the fast JSON reader agrees with ``json.loads``."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from actors.providers.fastpath import loads as _loads
from actors.providers.fastpath import new_delta as _new_delta
from runtime.schema import PAYLOAD_ADAPTER, ItemDelta


def test_fast_delta_is_a_real_item_delta() -> None:
    """Guards ``_new_delta``'s use of pydantic internals across pydantic upgrades."""
    fast, real = _new_delta("msg_1", "tok"), ItemDelta(item_id="msg_1", delta_content="tok")
    assert type(fast) is ItemDelta
    assert fast == real and hash(fast) == hash(real)
    assert fast.model_dump() == real.model_dump()
    assert fast.model_dump_json() == real.model_dump_json()
    assert PAYLOAD_ADAPTER.dump_json(fast) == PAYLOAD_ADAPTER.dump_json(real)
    assert fast.model_fields_set == real.model_fields_set | {"type"}
    assert fast.model_copy(update={"delta_content": "x"}).delta_content == "x"
    with pytest.raises(ValidationError):
        fast.delta_content = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("data", ['{"a": [1, "x"]}', ' {"a":1} ', '{"a":1}\t', "[]", '"s"',
                                  "NaN", "1e3"])
def test_fast_json_agrees_with_json_loads(data: str) -> None:
    assert json.dumps(_loads(data)) == json.dumps(json.loads(data))


@pytest.mark.parametrize("data", ['{"a":1}x', '{"a"', "", " ", "{'a': 1}", '{"a":1}{}'])
def test_fast_json_rejects_what_json_loads_rejects(data: str) -> None:
    with pytest.raises(ValueError):
        _loads(data)
