"""The seam between the web service and the worker goes one way (docs/architecture.md, *The seam*): read from the
source files with ``ast``, so nothing is imported, and imports inside functions count like the others."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("editor_core", "gpu_worker", "webapp")


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the three packages (migrations left out: Django writes them)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@lru_cache(maxsize=None)
def tree(module: str) -> ast.Module:
    return ast.parse(modules()[module].read_text(), filename=str(modules()[module]))


def for_type_checkers(module: str) -> set[int]:
    """``id`` of every node under ``if TYPE_CHECKING:``: imports for annotations only, none at run time."""
    return {id(inner) for node in ast.walk(tree(module)) if isinstance(node, ast.If)
            and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            for statement in node.body for inner in ast.walk(statement)}


def imported(module: str) -> set[str]:
    """Every name ``module`` imports at run time, anywhere in it (inside functions too): ``from a.b import c``
    gives ``a.b.c`` when that is a module, else ``a.b``."""
    names = set()
    skipped = for_type_checkers(module)
    for node in ast.walk(tree(module)):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in modules() else node.module)
    return names


def offences(package: str, refused) -> list[str]:
    return sorted(f"{module} imports {name}" for module in modules() if module.split(".")[0] == package
                  for name in imported(module) if refused(name))


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_web_service_reaches_the_worker_only_through_the_celery_app():
    """Tasks are sent by name (``jobs.send``); storage helpers and codecs live where both sides may use them."""
    assert offences("webapp", lambda name: within(name, "gpu_worker") and name != "gpu_worker.celery_app") == []


def test_the_engine_imports_neither_the_web_service_nor_the_worker_nor_django():
    assert offences("editor_core", lambda name: any(within(name, other)
                                                    for other in ("webapp", "gpu_worker", "django"))) == []


def test_the_worker_reaches_the_database_only_through_selectors_and_services():
    """No model or ``django.db`` import in ``gpu_worker``, and no ``Model.objects`` query either."""
    def orm(name: str) -> bool:
        parts = name.split(".")
        return within(name, "django.db") or (parts[0] == "webapp" and "models" in parts)

    queries = sorted(f"{module}:{node.lineno}" for module in modules() if module.startswith("gpu_worker")
                     for node in ast.walk(tree(module)) if isinstance(node, ast.Attribute) and node.attr == "objects")
    assert offences("gpu_worker", orm) == [] and queries == []


def test_no_module_imports_itself_through_others():
    """No import cycle among the project's modules (an import moved into a function to dodge one still counts)."""
    graph = {module: {name for name in imported(module) if name in modules() and name != module}
             for module in modules()}
    cycles = []
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                cycles.append(" → ".join(path[path.index(name):] + [name]))
            elif name not in state:
                visit(name, path + [name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
