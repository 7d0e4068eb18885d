"""The shape of the code: the API calls services only, and every package ships."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

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


def test_the_api_reaches_nothing_behind_the_services() -> None:
    bad = []
    for path in sorted((ROOT / "api").glob("*.py")):
        for module, name in imports_of(path):
            if any(module == m or module.startswith(m + ".") for m in BEHIND_THE_SERVICES):
                bad.append(f"{path.name}: {module}.{name}")
            if module == "runtime.store" and name != "Thread":  # the model, for OpenAPI
                bad.append(f"{path.name}: {module}.{name}")
            if module == "actors.system" and name not in ("Services", "open_runtime"):
                bad.append(f"{path.name}: {module}.{name}")
    assert bad == []


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for top in ("runtime", "actors", "api") for p in (ROOT / top).rglob("__init__.py")}
    listed = set(config["packages"])
    assert on_disk <= listed
    assert config["package-dir"]["cody_fixtures"] == "fixtures"
    assert "cody_fixtures" in listed
