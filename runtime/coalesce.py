"""Merging adjacent ``item_delta`` payloads of one item, for when the writer is behind.

A provider sends one event per token. While the run actor waits on a Redis append, the
tokens that arrive meanwhile queue up; writing each as its own event makes every stage after
it (XADD, the projector, every subscriber's SSE frame) pay per token exactly when the system
is busiest. Merged, they cost one event. The Response is unchanged, because the reducer
concatenates deltas however they were chunked (SPEC §4), order is kept, and no text is
dropped. An idle system never merges anything: its deltas arrive one batch at a time.

This module is pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.schema import ItemDelta, Payload


def coalesce_deltas(payloads: Sequence[Payload], max_chars: int) -> list[Payload]:
    """``payloads`` with each run of adjacent deltas of one item merged, each merged delta at
    most ``max_chars`` characters (a single larger delta is kept whole, never split).
    ``max_chars <= 0`` turns merging off."""
    if max_chars <= 0 or len(payloads) < 2:
        return list(payloads)
    out: list[Payload] = []
    run: list[ItemDelta] = []
    size = 0

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(ItemDelta(item_id=run[0].item_id,
                                 delta_content="".join(d.delta_content for d in run)))
        run.clear()

    for p in payloads:
        if isinstance(p, ItemDelta):
            n = len(p.delta_content)
            if run and (p.item_id != run[0].item_id or size + n > max_chars):
                flush()
            if not run:
                size = 0
            run.append(p)
            size += n
        else:
            flush()
            out.append(p)
    flush()
    return out
