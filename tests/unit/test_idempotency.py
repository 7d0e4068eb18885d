"""The rules of an Idempotency-Key (runtime/idempotency.py): keys, fingerprints, decisions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ValidationFailed
from runtime.idempotency import (
    MAX_KEY_LENGTH,
    Record,
    canonical_json,
    check_key,
    decide,
    fingerprint,
)
from runtime.keys import Keys
from runtime.turns import TurnRequest


@pytest.mark.parametrize("key", ["a", "0b6f1c1e-8a51-4c43-9d5e-3c7f0e7f9c11", "x" * MAX_KEY_LENGTH,
                                 "!~#$%&'()*+,-./:;<=>?@[]^_`{|}"])
def test_valid_keys_pass(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", " ", "a b", "x" * (MAX_KEY_LENGTH + 1), "é", "a\nb",
                                 "a\x00b", "tab\t"])
def test_bad_keys_are_400_naming_the_header(key: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_key(key)
    assert caught.value.details == {"field": "Idempotency-Key"}
    assert "Idempotency-Key" in caught.value.message


def test_no_header_is_no_key() -> None:
    assert check_key(None) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.randoms())
def test_fingerprint_ignores_key_order(body: dict[str, object], rnd: object) -> None:
    items = list(body.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    assert fingerprint(dict(items)) == fingerprint(body)
    assert canonical_json(dict(items)) == canonical_json(body)


def test_the_same_turn_is_the_same_body_however_it_is_spelled() -> None:
    a = TurnRequest.model_validate_json(
        '{"prompt": "hi", "thread_id": "0B6F1C1E-8A51-4C43-9D5E-3C7F0E7F9C11", "model": null}')
    b = TurnRequest.model_validate_json(
        '{  "thread_id":"0b6f1c1e-8a51-4c43-9d5e-3c7f0e7f9c11","prompt":"hi"}')
    c = TurnRequest.model_validate_json('{"prompt": "hi!"}')
    dump = {"mode": "json", "exclude_none": True}
    assert fingerprint(a.model_dump(**dump)) == fingerprint(b.model_dump(**dump))  # type: ignore[arg-type]
    assert fingerprint(a.model_dump(**dump)) != fingerprint(c.model_dump(**dump))  # type: ignore[arg-type]


def test_decisions() -> None:
    pending = Record("pending", "f1", "t1")
    done = Record("done", "f1", "t1", {"run_id": "r"})
    assert decide(None, "f1") == "claimed"
    assert decide(pending, "f1") == "pending"
    assert decide(done, "f1") == "replay"
    assert decide(pending, "f2") == "mismatch"
    assert decide(done, "f2") == "mismatch"


@given(st.sampled_from(["pending", "done"]), st.text(max_size=10), st.text(max_size=10))
def test_records_round_trip(state: str, fp: str, token: str) -> None:
    rec = Record(state, fp, token, {"run_id": "r", "n": 1} if state == "done" else None)  # type: ignore[arg-type]
    assert Record.decode(rec.encode()) == rec


@pytest.mark.parametrize("raw", [
    "", "[]", "{}", '{"state": "done", "fingerprint": "f", "token": "t"}',
    '{"state": "x", "fingerprint": "f", "token": "t"}'])
def test_foreign_values_are_not_records(raw: str) -> None:
    with pytest.raises(ValueError):
        Record.decode(raw)


def test_keys_are_per_tenant_hashed_and_hash_tagged() -> None:
    keys = Keys("cody")
    a = keys.idempotency("default", "k{1}")
    assert a == keys.idempotency("default", "k{1}")
    assert a != keys.idempotency("other", "k{1}")
    assert a.startswith("cody:idem:{") and a.endswith("}") and a.count("{") == 1
    assert "k{1}" not in a
