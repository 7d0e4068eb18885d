"""``cody serve`` with its garbage-collection pauses recorded, for bench/run.py.

The benchmark needs the server's GC pauses (a collection stalls every stream on the loop)
without adding a debug endpoint to the product: this wrapper installs a ``gc.callbacks``
timer in the server process and runs the ordinary ``cody serve``. ``SIGUSR1`` writes the
pauses recorded since the previous signal to ``CODY_BENCH_GC_FILE`` (JSON, written to a
temporary name and renamed, so a reader never sees half a file) and starts a new window.

    python -m bench.serve_gc   (same environment as ``cody serve``)
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_pauses: list[tuple[int, float, int, float]] = []
"""(generation, CPU ms, objects collected, wall ms) per collection. The CPU time of the
collection is what the loop cannot get back; on a machine shared with other work the wall
time also counts the moments the process was not scheduled."""
_started = [0.0, 0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.thread_time()
        _started[1] = time.perf_counter()
    else:
        _pauses.append((int(info.get("generation", -1)),
                        (time.thread_time() - _started[0]) * 1000,
                        int(info.get("collected", 0)),
                        (time.perf_counter() - _started[1]) * 1000))


def _dump(_signum: int, _frame: FrameType | None) -> None:
    path = os.environ["CODY_BENCH_GC_FILE"]
    pauses = list(_pauses)
    _pauses.clear()
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        json.dump(pauses, out)
    os.replace(tmp, path)


def main() -> int:
    gc.callbacks.append(_on_gc)
    signal.signal(signal.SIGUSR1, _dump)
    from api.cli import main as cody

    return cody(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
