"""Lazy public faces (PEP 562) for the layers' ``__init__`` files.

Each layer's ``__init__`` names what the layers above may import and where each name lives;
the module behind a name is imported on its first use, so a client command such as
``cody run`` loads neither the store's drivers nor the Redis client. One mechanism for every
face: the ``__init__`` files only list their names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, origins: Mapping[str, str],
                 namespace: dict[str, Any]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: looks ``name`` up in ``origins`` (name ->
    module), imports that module, and keeps the value in ``namespace`` (the package's
    globals), so the next lookup is a plain attribute."""

    def __getattr__(name: str) -> object:
        try:
            module = origins[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
