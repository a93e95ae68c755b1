"""A notebook run's cells, from its checkpoints: which checkpoint holds the state after a cell,
which cell defined a name, and the `def`/`class` statements that make a definition again.

Pure code over manifests (their `cells` lists, see records.MANIFEST_FIELDS) and cell sources;
`transform` turns a cell's source as typed (magics included) into Python, as IPython does.
"""

from __future__ import annotations

import ast

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class NotSaved(LookupError):
    """The state after a cell is not in any checkpoint; the message says why and what is."""


class Cell:
    """One cell run by a kernel: its execution count, its source as typed, and the index of the
    checkpoint holding the state after it (None when none does)."""

    __slots__ = ("count", "source", "state_index")

    def __init__(self, count: int | None, source: str, state_index: int | None) -> None:
        self.count = count
        self.source = source
        self.state_index = state_index


def cells_of(manifests: list[dict[str, Any]]) -> list[Cell]:
    """The cells of a run, oldest first, from its checkpoint manifests (oldest first)."""
    found: list[Cell] = []
    previous: int | None = None
    for manifest in manifests:
        for entry in manifest.get("cells") or []:
            state = {"this": manifest["index"], "previous": previous}.get(entry["state"])
            found.append(Cell(entry["count"], entry["source"], state))
        previous = manifest["index"]
    return found


def state_after(cells: list[Cell], count: int) -> int:
    """The index of the checkpoint that holds the state after cell `count` (its latest run)."""
    matching = [cell for cell in cells if cell.count == count]
    if not matching:
        raise NotSaved(f"cell [{count}] did not run in this kernel before its last checkpoint"
                       f"{_saved_hint(cells)}")
    cell = matching[-1]
    if cell.state_index is None:
        raise NotSaved(f"the state after cell [{count}] was not saved (the next cell ran before a "
                       f"checkpoint was due){_saved_hint(cells)}")
    return cell.state_index


def _saved_hint(cells: list[Cell]) -> str:
    saved = [cell.count for cell in cells if cell.state_index is not None and cell.count is not None]
    if not saved:
        return ""
    return "; the state after " + _counts_text(saved) + " is"


def _counts_text(counts: list[int]) -> str:
    """[1, 2, 3, 5, 7, 8] → "cells [1]-[3], [5], [7]-[8]"."""
    spans: list[list[int]] = []
    for count in sorted(set(counts)):
        if spans and count == spans[-1][1] + 1:
            spans[-1][1] = count
        else:
            spans.append([count, count])
    parts = [f"[{a}]" if a == b else f"[{a}]-[{b}]" for a, b in spans]
    return ("cell " if len(counts) == 1 else "cells ") + ", ".join(parts)


_DEFINES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_OWN_SCOPE = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def bound_names(statement: ast.stmt) -> set[str]:
    """The names a top-level statement binds in the namespace it runs in (assignments, imports,
    def, class, for, with, except … as; not the names local to a comprehension or lambda)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, _DEFINES):
            names.add(node.name)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).partition(".")[0] for alias in node.names if alias.name != "*")
            return
        if isinstance(node, _OWN_SCOPE):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(statement)
    return names


def _statements(source: str, transform: Callable[[str], str]) -> list[ast.stmt]:
    try:
        return ast.parse(transform(source)).body
    except (SyntaxError, ValueError):
        return []


def upto(cells: list[Cell], index: int) -> list[Cell]:
    """The cells of a run up to the last one whose state checkpoint `index` holds."""
    last = max((i for i, cell in enumerate(cells) if cell.state_index == index), default=len(cells) - 1)
    return cells[:last + 1]


def defining_cell(cells: list[Cell], name: str, transform: Callable[[str], str]) -> Cell | None:
    """The last of `cells` that binds `name` at its top level (by assignment, import, def, class,
    for or with)."""
    for cell in reversed(cells):
        if any(name in bound_names(statement) for statement in _statements(cell.source, transform)):
            return cell
    return None


def definition(cell: Cell, name: str, transform: Callable[[str], str]) -> ast.stmt | None:
    """The last statement of `cell` that binds `name` to what it is and nothing else runs around
    it: a `def`, `class` or import, or an assignment (`Point = namedtuple(...)`,
    `DC = dataclass(C)`); None when another kind of statement binds it (a loop, a `with`)."""
    found = None
    for statement in _statements(cell.source, transform):
        if isinstance(statement, _MAKES) and name in bound_names(statement):
            found = statement
    return found


_MAKES = (*_DEFINES, ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)
