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


STORE = sorted(name for name in GRAPH if name.startswith("chkpt.store."))
USERS_OF_THE_STORE = {"chkpt.writer", "chkpt.api", "chkpt.cleanup", "chkpt.cli", "chkpt.session", "chkpt.sync",
                      "chkpt.shared", "chkpt.capture", "chkpt.resume"}

# Modules that must not lean on these others: the store knows nothing of who uses it, the
# schema and the name grammar nothing of anyone, the read side nothing of the writer.
FORBIDDEN = {
    "chkpt.records": {"*"},
    "chkpt.naming": {"*"},
    "chkpt.eviction": {"*"},
    "chkpt.api": {"chkpt.writer", "chkpt.capture", "chkpt.cleanup", "chkpt.session", "chkpt.cli"},
    "chkpt.writer": {"chkpt.api", "chkpt.cli", "chkpt.resume"},
    "chkpt.capture": {"chkpt.writer", "chkpt.store", "chkpt.api"},
    # the shared store moves store files and knows nothing of who writes or reads them
    "chkpt.sync": {"chkpt.writer", "chkpt.api", "chkpt.cli", "chkpt.session", "chkpt.capture", "chkpt.shared"},
    "chkpt.shared": {"chkpt.writer", "chkpt.api", "chkpt.cli", "chkpt.session", "chkpt.capture"},
    **{name: USERS_OF_THE_STORE for name in ["chkpt.store", *STORE]},
    # notebooks: the kernel's start-up loads no checkpoint machinery; which cell is which is pure logic; the
    # driver writes and never reads runs; putting a checkpoint back is the read side's
    "chkpt.notebook.startup": {"chkpt.config", "chkpt.session", "chkpt.writer", "chkpt.api", "chkpt.monitor",
                               "chkpt.notebook.kernel", "chkpt.notebook.commands"},
    "chkpt.notebook.cells": {"*"},
    "chkpt.notebook.kernel": {"chkpt.api", "chkpt.cli", "chkpt.resume", "chkpt.notebook.restore"},
    "chkpt.notebook.restore": {"chkpt.writer", "chkpt.session", "chkpt.capture", "chkpt.notebook.kernel"},
}

# The store's lowest modules, and all that each may use: the key layout leans on the record
# schema only (blob names), the rest of the package on these.
ONLY = {
    "chkpt.store.errors": set(),
    "chkpt.store.codec": set(),
    "chkpt.store.threads": {"chkpt.unseen"},  # its threads start out of the program's tools' sight
    "chkpt.store.backend": set(),
    "chkpt.store.layout": {"chkpt.records", "chkpt.paths"},
    "chkpt.store.files": {"chkpt.store.errors"},
    "chkpt.store.local": {"chkpt.paths", "chkpt.store.layout", "chkpt.store.backend", "chkpt.store.errors",
                          "chkpt.store.files", "chkpt.store.locks"},
    "chkpt.store.locks": {"chkpt.store.errors", "chkpt.store.files"},
}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_each_layer_leans_only_on_the_layers_below(module):
    forbidden = FORBIDDEN[module]
    uses = GRAPH[module]
    if "*" in forbidden:
        assert uses == set(), f"{module} should import nothing of chkpt, imports {sorted(uses)}"
    else:
        assert not {u for u in uses if any(u == f or u.startswith(f + ".") for f in forbidden)}


@pytest.mark.parametrize("module", sorted(ONLY))
def test_the_stores_lowest_modules_use_only_what_they_may(module):
    assert GRAPH[module] <= ONLY[module]


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string constants of a module that are not docstrings, f-strings' format
    specs included."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


# How a store's files are named: only chkpt/store/layout.py spells them.
LAYOUT_SPELLINGS = ("runs/", "blobs/", "index/", "checkpoints/", "/checkpoints", "run.json", "gc.lock", "06d")


def test_the_key_layout_of_the_store_has_one_owner():
    spelled = [f"{name}:{line} {text!r}" for name, path in modules().items() if name != "chkpt.store.layout"
               for line, text in _code_strings(path)
               if any(s in text for s in LAYOUT_SPELLINGS) or (text in ("STORE", "usage", "pinned", "tmp")
               and name.startswith(("chkpt.store", "chkpt.sync", "chkpt.shared", "chkpt.cleanup")))]
    assert spelled == []


def _calls(path: Path, dotted: str) -> list[int]:
    """The lines where a module calls `dotted` (e.g. "fcntl.flock")."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted]


def test_the_store_has_one_file_lock_one_thread_pool_and_one_wait_for_a_thread():
    known = modules()
    assert {name for name, path in known.items() if _calls(path, "fcntl.flock")} == {"chkpt.store.locks"}
    pools = {name for name, path in known.items()
             for loop in ast.walk(ast.parse(path.read_text())) if isinstance(loop, ast.For | ast.While)
             for call in ast.walk(loop) if isinstance(call, ast.Call)
             and ast.unparse(call.func) in ("_thread.start_new_thread", "unseen.start_thread")}
    assert pools == {"chkpt.store.threads"}
    # watch.py, on the start-up path, cannot import the store: its timer waits for itself
    waits = {name for name, path in known.items() if "/proc/self/task/" in path.read_text()}
    assert waits - {"chkpt.watch"} == {"chkpt.store.threads"}


def test_only_the_local_backend_and_its_descriptors_open_store_files():
    """Every file of a store is opened non-blocking, checked and known by its identity (files.py)."""
    opening = {name for name, path in modules().items() if _calls(path, "os.open")
               and name.startswith(("chkpt.store", "chkpt.sync", "chkpt.shared", "chkpt.cleanup"))}
    assert opening == {"chkpt.store.files", "chkpt.store.local"}


def test_no_module_is_named_like_a_standard_library_module():
    clashes = {name for name in GRAPH if name.rpartition(".")[2] in sys.stdlib_module_names}
    assert clashes == set()
