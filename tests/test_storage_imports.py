"""The engine, the dispatcher and the runtime do not know which storage backend they talk to.

Checked on the source, not at run time: every ``import`` statement (at module
level or inside a function) of these modules, and of every personae module
they import in turn, is read with :mod:`ast`, and none may reach the SQLite
backend. A PostgreSQL backend can then be passed in without touching them.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

import pytest

#: Typed against personae.storage.interface only.
BACKEND_NEUTRAL = ("personae.engine.engine", "personae.delivery.dispatcher", "personae.app.runtime")
#: What a backend-neutral module may not import, directly or through another personae module.
BACKEND = (
    "personae.storage.store",
    "personae.storage.sqlite",
    "personae.storage.postgres",
    "sqlite3",
    "aiosqlite",
    "asyncpg",
)


@functools.cache
def source_of(module: str) -> tuple[Path, bool] | None:
    """The file of a personae module, and whether it is a package; ``None`` for anything else."""
    if module != "personae" and not module.startswith("personae."):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def imports_of(module: str) -> set[str]:
    """Every module ``module``'s source imports, relative imports resolved, ``from x import sub`` included."""
    found = source_of(module)
    assert found is not None, module
    path, is_package = found
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            # ``from . import store`` imports a module, not a name.
            names.update(f"{target}.{a.name}" for a in node.names if source_of(f"{target}.{a.name}"))
    return names


def reachable(module: str) -> dict[str, str]:
    """Every module imported from ``module``, directly or through personae modules: name -> who imports it."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            if name in seen or name == module:
                continue
            seen[name] = current
            if source_of(name) is not None:
                todo.append(name)
    return seen


def is_backend(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BACKEND)


@pytest.mark.parametrize("module", BACKEND_NEUTRAL)
def test_module_imports_no_storage_backend(module: str):
    graph = reachable(module)
    leaks = sorted(f"{name} (imported by {graph[name]})" for name in graph if is_backend(name))
    assert leaks == [], f"{module} reaches a storage backend: {', '.join(leaks)}"
    assert "personae.storage.interface" in graph  # it is typed against the interface


def test_the_check_sees_a_backend_import():
    # The SQLite facade itself imports the backend: the check must see it, or it proves nothing.
    assert any(is_backend(name) for name in reachable("personae.storage.store"))
    assert "personae.storage.select" in imports_of("personae.app.commands")  # an import inside a function
