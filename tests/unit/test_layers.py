"""The shape of the code: the API calls services only, and every package ships."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BEHIND_THE_SERVICES = {"runtime.eventlog", "runtime.group_commit", "runtime.redis_server",
                       "actors.run_actor", "actors.fanout", "actors.local_runs",
                       "actors.projector", "actors.janitor", "actors.tools", "actors.providers"}
"""What only the services (and the factory) may use: the API goes through ``Services``."""


def imports_of(path: Path) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {(node.module, a.name) for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {(a.name, "") for a in node.names}
    return out


LAYERS = {"runtime": ("actors", "api"), "actors": ("api",)}
"""Which layers import which: each imports the one below only through its ``__init__``."""


def face(package: str) -> dict[str, str]:
    """What ``package/__init__.py`` re-exports: name -> the module it comes from."""
    init = ROOT / package / "__init__.py"
    out: dict[str, str] = {}
    declared: list[str] = []
    for node in ast.walk(ast.parse(init.read_text())):  # the imports sit under TYPE_CHECKING
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            out |= {a.asname or a.name: str(node.module) for a in node.names}
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            declared = list(ast.literal_eval(node.value))
    assert sorted(declared) == sorted(out), f"{package}/__init__.py: __all__ != its imports"
    return out


def product_files(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def test_imports_across_layers_go_through_the_faces() -> None:
    """``from runtime.eventlog import EventLog`` in actors/ would tie the actors to a file
    inside runtime/; ``from runtime import EventLog`` ties them to the layer's promise."""
    bad = []
    for package, importers in LAYERS.items():
        names = face(package)
        for top in importers:
            for path in product_files(top):
                for module, name in imports_of(path):
                    where = f"{path.relative_to(ROOT)}: {module}.{name}"
                    if module.startswith(package + "."):
                        bad.append(f"{where} (import it from {package})")
                    elif module == package and name not in names:
                        bad.append(f"{where} (not in {package}/__init__.py)")
    assert bad == []


def test_every_name_a_face_promises_is_there() -> None:
    import importlib

    for package in LAYERS:
        module = importlib.import_module(package)
        for name, origin in face(package).items():
            assert getattr(module, name) is getattr(importlib.import_module(origin), name)
        assert sorted(module.__all__) == sorted(face(package))
        assert sorted(module._ORIGINS.items()) == sorted(face(package).items())
        with pytest.raises(AttributeError):
            module.NoSuchName  # noqa: B018


def test_a_client_command_loads_no_store_and_no_redis_client() -> None:
    """The faces load lazily: ``cody run`` imports the SSE decoder and the config, not the
    store's drivers or coredis (half a second of start-up for every client command)."""
    import subprocess
    import sys

    code = ("import sys, api.cli; print(sorted(m for m in ('psycopg', 'coredis', "
            "'actors.system') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_api_reaches_nothing_behind_the_services() -> None:
    runtime_face, actors_face = face("runtime"), face("actors")
    bad = []
    for path in sorted((ROOT / "api").glob("*.py")):
        for module, name in imports_of(path):
            origin = {"runtime": runtime_face, "actors": actors_face}.get(module, {}).get(
                name, module)
            if any(origin == m or origin.startswith(m + ".") for m in BEHIND_THE_SERVICES):
                bad.append(f"{path.name}: {origin}.{name}")
            # the store's model (for OpenAPI) and the tenant of a server without keys
            if origin.startswith("runtime.store") and name not in ("Thread", "DEFAULT_TENANT"):
                bad.append(f"{path.name}: {origin}.{name}")
            # the factory, its services, and the supervisor of `cody serve --workers N`
            if origin.startswith("actors") and name not in ("Services", "open_runtime",
                                                            "serve_workers"):
                bad.append(f"{path.name}: {origin}.{name}")
    assert bad == []


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for top in ("runtime", "actors", "api") for p in (ROOT / top).rglob("__init__.py")}
    listed = set(config["packages"])
    assert on_disk <= listed
    assert config["package-dir"]["cody_fixtures"] == "fixtures"
    assert "cody_fixtures" in listed
