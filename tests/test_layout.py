"""The package layout is the architecture: layers import only downwards, nothing imports the CLI,
no import cycles, no command imports another, and every ``>>>`` example in the package runs."""
from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import radixsnn
from radixsnn.cli import COMMANDS

ROOT = Path(radixsnn.__file__).parent
#: Lower layers first; a module may import its own layer and the ones before it (plus the shared
#: root modules: errors, outputs, version).
LAYERS = ["core", "models", "data", "training", "experiments", "cli"]
SHARED = {"radixsnn.errors", "radixsnn.outputs", "radixsnn.version"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The radixsnn modules ``name`` imports anywhere in its source (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("radixsnn"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("radixsnn"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found - {name}


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_import_is_a_module_of_the_package():
    unknown = {(m, i) for m, deps in GRAPH.items() for i in deps if i not in MODULES}
    assert not unknown


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n)))
def test_layers_import_only_downwards(name):
    own = LAYERS.index(_layer(name))
    for dep in GRAPH[name]:
        if dep in SHARED:
            continue
        assert _layer(dep) is not None and LAYERS.index(_layer(dep)) <= own, f"{name} imports {dep}"


def test_core_knows_nothing_above_it():
    for name, deps in GRAPH.items():
        if _layer(name) == "core":
            assert all(_layer(d) == "core" or d in SHARED for d in deps), (name, deps)


def test_nothing_imports_the_cli():
    for name, deps in GRAPH.items():
        if _layer(name) != "cli" and name != "radixsnn.__main__":
            assert not [d for d in deps if _layer(d) == "cli"], name


def test_no_command_imports_another():
    commands = {f"radixsnn.cli.{c}" for c in COMMANDS}
    assert commands <= set(MODULES)
    for name in commands:
        assert not GRAPH[name] & (commands - {name}), name


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in GRAPH[node]:
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_every_example_in_the_package_runs():
    """Each ``>>>`` example of every module (the public API's included) is executed and checked."""
    tried = 0
    for info in pkgutil.walk_packages(radixsnn.__path__, "radixsnn."):
        if info.name == "radixsnn.__main__":
            continue
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, info.name
        tried += result.attempted
    result = doctest.testmod(radixsnn)
    assert result.failed == 0 and result.attempted > 0
    assert tried + result.attempted >= 40
