from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sse import (
    KEEP_ALIVE,
    STREAM_OPEN,
    SSEDecoder,
    SSEMessage,
    encode_comment,
    encode_entry,
    encode_frame,
)

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


def test_an_entry_frame_is_the_exact_bytes_clients_get() -> None:
    """The fan-out's frame, pinned byte for byte: ids, type and the stored JSON untouched."""
    data = b'{"type":"item_delta","payload":{"delta_content":"a\\nb \xc3\xa9"}}'
    assert encode_entry("1700000000000-7", "item_delta", data) == (
        b"id: 1700000000000-7\nevent: item_delta\ndata: " + data + b"\n\n")
    assert decode([encode_entry("1-0", "x", data)]) == [
        SSEMessage("x", data.decode(), "1-0")]
    assert STREAM_OPEN == b": stream open\n\n"
    assert KEEP_ALIVE == b": keep-alive\n\n"


@settings(max_examples=200, deadline=None)
# no lone surrogates: what we store is UTF-8, which cannot carry them
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="\n\r"), max_size=40),
       st.from_regex(r"\A[a-z_]{1,20}\Z"), st.from_regex(r"\A[0-9]{1,13}-[0-9]{1,4}\Z"))
def test_entry_frames_are_one_line_frames(data: str, event: str, entry_id: str) -> None:
    """The hot-path encoder and the general one agree for the one-line JSON we store."""
    assert encode_entry(entry_id, event, data.encode()) == encode_frame(data, event=event,
                                                                        id=entry_id)
