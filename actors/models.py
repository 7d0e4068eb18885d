"""The models service: what ``GET /api/v2/models`` and ``cody models`` show.

The catalogue (runtime/catalogue.py) is loaded once, by the factory; this service only lists
it, with whether each provider's key is in the server's environment (``set``, ``missing``, or
``not needed`` for a provider without ``api_key_env``), never the key itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime import Catalogue, ModelInfo


class ModelService:
    def __init__(self, catalogue: Catalogue, env: Mapping[str, str]) -> None:
        self._catalogue = catalogue
        self._env = env

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def list_models(self) -> list[ModelInfo]:
        """Every catalogue model in order: the built-ins, then the file's new ones."""
        return self._catalogue.listing(self._env)
