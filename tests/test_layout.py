"""The package's imports run one way: no cycles (lazy imports inside functions count), and each
layer leans only on the layers below it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "chkpt"


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its code (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_there_are_no_import_cycles():
    cycles = []

    def visit(name: str, stack: list[str], done: set[str]) -> None:
        if name in stack:
            cycles.append(" -> ".join([*stack[stack.index(name):], name]))
            return
        if name in done:
            return
        done.add(name)
        for dependency in sorted(GRAPH[name]):
            visit(dependency, [*stack, name], done)

    done: set[str] = set()
    for name in sorted(GRAPH):
        visit(name, [], done)
    assert cycles == []


# Modules that must not lean on these others: the store knows nothing of who uses it, the
# schema and the name grammar nothing of anyone, the read side nothing of the writer.
FORBIDDEN = {
    "chkpt.records": {"*"},
    "chkpt.naming": {"*"},
    "chkpt.eviction": {"*"},
    "chkpt.store": {"chkpt.writer", "chkpt.api", "chkpt.cleanup", "chkpt.cli", "chkpt.session"},
    "chkpt.api": {"chkpt.writer", "chkpt.capture", "chkpt.cleanup", "chkpt.session", "chkpt.cli"},
    "chkpt.writer": {"chkpt.api", "chkpt.cli", "chkpt.resume"},
    "chkpt.capture": {"chkpt.writer", "chkpt.store", "chkpt.api"},
    # the shared store moves store files and knows nothing of who writes or reads them
    "chkpt.remote": {"chkpt.writer", "chkpt.api", "chkpt.cli", "chkpt.session", "chkpt.sync", "chkpt.shared"},
    "chkpt.sync": {"chkpt.writer", "chkpt.api", "chkpt.cli", "chkpt.session", "chkpt.capture", "chkpt.shared"},
    "chkpt.shared": {"chkpt.writer", "chkpt.api", "chkpt.cli", "chkpt.session", "chkpt.capture"},
    # notebooks: the kernel's start-up imports nothing; which cell is which is pure logic; the
    # driver writes and never reads runs; putting a checkpoint back is the read side's
    "chkpt.notebook.startup": {"chkpt.config", "chkpt.session", "chkpt.writer", "chkpt.api", "chkpt.monitor",
                               "chkpt.notebook.kernel", "chkpt.notebook.commands"},
    "chkpt.notebook.cells": {"*"},
    "chkpt.notebook.kernel": {"chkpt.api", "chkpt.cli", "chkpt.resume", "chkpt.notebook.restore"},
    "chkpt.notebook.restore": {"chkpt.writer", "chkpt.session", "chkpt.capture", "chkpt.notebook.kernel"},
}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_each_layer_leans_only_on_the_layers_below(module):
    forbidden = FORBIDDEN[module]
    uses = GRAPH[module]
    if "*" in forbidden:
        assert uses == set(), f"{module} should import nothing of chkpt, imports {sorted(uses)}"
    else:
        assert not {u for u in uses if any(u == f or u.startswith(f + ".") for f in forbidden)}


def test_no_module_is_named_like_a_standard_library_module():
    clashes = {name for name in GRAPH if name.rpartition(".")[2] in sys.stdlib_module_names}
    assert clashes == set()
