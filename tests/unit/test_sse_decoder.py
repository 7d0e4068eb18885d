from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sse import SSEDecoder, SSEMessage, encode_comment, encode_frame

BODY = (b": comment\r\n"
        b"event: a\r\ndata: one\r\n\r\n"
        b"event: b\ndata: two\ndata: lines\nid: 5-0\n\n"
        b"data:no-space\rdata: x\r\r"
        b"retry: 300\ndata: {\"k\": \"\xc3\xa9\"}\n\n"
        b"event: lost\ndata: never dispatched")


def decode(chunks: list[bytes]) -> list[SSEMessage]:
    d = SSEDecoder()
    out: list[SSEMessage] = []
    for c in chunks:
        out += d.feed(c)
    return out + d.close()


EXPECTED = [
    SSEMessage("a", "one"),
    SSEMessage("b", "two\nlines", "5-0"),
    SSEMessage("message", "no-space\nx", "5-0"),
    SSEMessage("message", '{"k": "é"}', "5-0", 300),
]


def test_whole() -> None:
    assert decode([BODY]) == EXPECTED


def test_byte_at_a_time() -> None:
    assert decode([BODY[i:i + 1] for i in range(len(BODY))]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=30))
def test_any_split(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [BODY[a:b] for a, b in zip([0, *points], [*points, len(BODY)], strict=True)]
    assert decode(chunks) == EXPECTED


def test_encode_roundtrip() -> None:
    frame = encode_frame("a\nb", event="x", id="1-0") + encode_comment("ka")
    assert decode([frame]) == [SSEMessage("x", "a\nb", "1-0")]
