"""The trio actors and the services built from them: run actors, fan-out, projector,
janitor, providers, tools, and the factory (``open_runtime``) that wires a runtime.

This file is the layer's public face: ``api/`` imports from ``actors`` only the names listed
here (tests/unit/test_layers.py pins it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime import lazy_getattr

if TYPE_CHECKING:
    from actors.system import Services, open_runtime
    from actors.workers import serve_workers

_ORIGINS: dict[str, str] = {
    "Services": "actors.system",
    "open_runtime": "actors.system",
    "serve_workers": "actors.workers",
}
"""Where each public name lives: its module is imported on first use."""


__getattr__ = lazy_getattr(__name__, _ORIGINS, globals())


__all__ = [
    "Services",
    "open_runtime",
    "serve_workers",
]
