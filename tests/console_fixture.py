"""A recording made for the console's tests: thinking, then a tool call (read_file), then a
long answer of numbered words, on Anthropic's wire format (claude-haiku-4.5).

No shipped recording has thinking and a tool call in one turn, so this one is written from the
shapes of ``anthropic/thinking_message`` and ``anthropic/tool_read_file``. Its text is numbered
words (``w001 w002 …``) so that a duplicated or lost delta is plain to see, and long enough
(with ``CODY_REPLAY_DELAY_S``) to cut a stream in the middle of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NAME = "console_demo"
MODEL = "claude-haiku-4.5"
PROMPT = "Show me what you can do."
THINKING = ["The user wants", " a demo.", " Reading notes.txt", " first is the", " plan."]
CALL_ID = "toolu_01ConsoleDemoReadFile00"
CALL_ARGS = ['{"path": ', '"notes.tx', 't"}']
WORDS = 80


def answer_words(n: int = WORDS) -> list[str]:
    return [f"w{i:03d} " for i in range(1, n + 1)]


def answer_text(n: int = WORDS) -> str:
    return "".join(answer_words(n))


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _message_start(msg_id: str, input_tokens: int) -> str:
    return _sse("message_start", {"type": "message_start", "message": {
        "model": "claude-haiku-4-5-20251001", "id": msg_id, "type": "message",
        "role": "assistant", "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 4}}})


def _end(stop: str, input_tokens: int, output_tokens: int) -> str:
    return (_sse("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"input_tokens": input_tokens,
                                             "cache_creation_input_tokens": 0,
                                             "cache_read_input_tokens": 0,
                                             "output_tokens": output_tokens}})
            + _sse("message_stop", {"type": "message_stop"}))


def stream_one() -> str:
    out = _message_start("msg_01ConsoleDemoFirst000000", 600)
    out += _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "thinking", "thinking": "",
                                                          "signature": ""}})
    for piece in THINKING:
        out += _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "thinking_delta",
                                                      "thinking": piece}})
    out += _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "signature_delta",
                                                  "signature": "c2lnbmF0dXJl"}})
    out += _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += _sse("content_block_start", {"type": "content_block_start", "index": 1,
                                        "content_block": {"type": "tool_use", "id": CALL_ID,
                                                          "name": "read_file", "input": {}}})
    for piece in CALL_ARGS:
        out += _sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                            "delta": {"type": "input_json_delta",
                                                      "partial_json": piece}})
    out += _sse("content_block_stop", {"type": "content_block_stop", "index": 1})
    return out + _end("tool_use", 600, 60)


def stream_two(words: int = WORDS) -> str:
    out = _message_start("msg_01ConsoleDemoSecond00000", 700)
    out += _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
    for word in answer_words(words):
        out += _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": word}})
    out += _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    return out + _end("end_turn", 700, words)


def write_console_fixtures(root: Path) -> Path:
    """Write the recording under ``root/anthropic/console_demo``; returns ``root`` (the value
    for ``CODY_FIXTURES_DIR``). It is the default for its model, so any prompt plays it."""
    path = root / "anthropic" / NAME
    path.mkdir(parents=True, exist_ok=True)
    (path / "stream-1.sse").write_text(stream_one())
    (path / "stream-2.sse").write_text(stream_two())
    (path / "request-1.json").write_text("{}")
    (path / "request-2.json").write_text("{}")
    (path / "expected.json").write_text("{}")
    (path / "fixture.json").write_text(json.dumps({
        "name": NAME, "scenarios": [], "provider": "anthropic", "model": MODEL,
        "prompt": PROMPT, "default": True, "wire_valid": True, "tools": ["read_file"],
        "exchanges": [{"request": "request-1.json", "stream": "stream-1.sse",
                       "tool_outputs": []},
                      {"request": "request-2.json", "stream": "stream-2.sse",
                       "tool_outputs": []}]}, indent=2))
    return root
