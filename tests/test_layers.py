"""The layers import one way (README, "Layout"): the core, then the sources, then the service.

Read from the source with ``ast`` (every import, at the top of a module or inside a function) and
checked in fresh interpreters, so that an import added anywhere in a lower layer fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lookup_core", "crm_backends", "config", "lookup_service")
# A module may import modules of its own layer and of the layers below, never above.
LAYERS = {
    "lookup_core": 0,  # phone numbers, value types, errors: no Flask, no I/O
    "crm_backends": 1,  # the sources and the local index
    "config": 2,  # the package (empty) and
    "config.settings": 2,  # settings: validated with the backends' option schemas, read by the layers above
    "lookup_service": 3,  # the web service, the engine, the CLI
    # gunicorn's plug-ins and the WSGI entry point: they start the service
    "config.gunicorn_conf": 4,
    "config.gunicorn_logging": 4,
    "config.balanced_worker": 4,
    "wsgi": 4,
}
# What the lower layers (below the service) must not import, directly or through another module.
WEB = ("flask", "werkzeug", "click", "gunicorn", "lookup_service")
CORE_THIRD_PARTY = {"phonenumbers", "marshmallow"}


def project_modules() -> dict[str, Path]:
    modules = {"wsgi": ROOT / "wsgi.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem.replace('.', '_')}"
            modules[name] = path
    return modules


MODULES = project_modules()


def layer(module: str) -> int:
    name = module
    while name not in LAYERS:
        name = name.rpartition(".")[0]
        assert name, f"module {module!r} has no layer: add it to LAYERS"
    return LAYERS[name]


def imported_names(module: str, path: Path) -> set[str]:
    """Every name ``module`` imports (absolute, relative imports resolved), wherever the import is."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            names.update(submodules or {base})  # "from package import module" imports the module
    return names


def project_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a name resolved to its module)."""
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(project_edges(MODULES)) is None


def test_no_layer_imports_an_upper_one():
    wrong = [
        f"{module} imports {target}"
        for module, targets in project_edges(MODULES).items()
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert wrong == []


def test_the_lower_layers_name_no_web_framework():
    wrong = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if layer(module) < LAYERS["lookup_service"]
        for name in sorted(imported_names(module, path))
        if name.split(".")[0] in WEB
    ]
    assert wrong == []


def test_the_core_needs_only_the_standard_library_phonenumbers_and_marshmallow():
    wrong = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if layer(module) == LAYERS["lookup_core"]
        for name in sorted(imported_names(module, path))
        if name.split(".")[0] not in sys.stdlib_module_names | CORE_THIRD_PARTY | {"lookup_core"}
    ]
    assert wrong == []


LOWER = [module for module in MODULES if layer(module) < LAYERS["lookup_service"]]


@pytest.mark.parametrize("module", LOWER)
def test_importing_a_lower_module_loads_no_web_framework(module):
    """In a fresh interpreter: what a module imports at run time, through every other module."""
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {WEB!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_the_checks_see_an_upward_import(tmp_path):
    """The graph check itself: an upward import and a cycle, written into copies, are found."""
    backend = tmp_path / "backend.py"
    backend.write_text("import flask\nfrom lookup_service.engine import LookupEngine\n")
    store = tmp_path / "store.py"
    store.write_text("from .index import build\n")
    index = tmp_path / "index.py"
    index.write_text("from .store import open_store\n")
    modules = {"crm_backends.backend": backend, "crm_backends.store": store, "crm_backends.index": index,
               "lookup_service.engine": ROOT / "lookup_service" / "engine.py"}
    assert "flask" in imported_names("crm_backends.backend", backend)
    edges = project_edges(modules)
    assert "lookup_service.engine" in edges["crm_backends.backend"]
    assert layer("lookup_service.engine") > layer("crm_backends.backend")
    assert find_cycle(edges) == ["crm_backends.index", "crm_backends.store", "crm_backends.index"]
