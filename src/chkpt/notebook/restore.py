"""Putting a notebook's saved state back into a namespace: `restore` (the last checkpoint of the
notebook's latest other kernel, e.g. after that kernel died) and `checkout` (the state after a
given cell).

The order is what unpickling needs: the definitions first (modules and library functions and
classes imported again by name; functions and classes of the notebook made again by running the
statement that last bound them (`def`, `class`, or an assignment such as
`Point = namedtuple(...)`) from its cell, not the rest of that cell, in the order they ran),
then every saved value (`Checkpoint.load_all`: read and decompressed by several threads,
unpickled here), then the definitions that needed a value. What cannot be put back is listed
with the reason and the cell that defined it, for the user to run again.
"""

from __future__ import annotations

import ast
import importlib
import os
import time

from chkpt import api, fmt
from chkpt.notebook import cells as cells_module
from chkpt.notebook.cells import Cell, NotSaved

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

class Restored:
    """What a restore or checkout put back, and what it could not (shown as a few lines)."""

    def __init__(self, checkpoint: api.Checkpoint, action: str) -> None:
        self.checkpoint = checkpoint
        self.action = action
        self.values: list[str] = []
        self.definitions: list[str] = []
        self.removed: list[str] = []
        self.skipped: list[tuple[str, str, Cell | None]] = []  # name, reason, the cell that defined it
        self.seconds = 0.0

    @property
    def lines(self) -> list[str]:
        checkpoint = self.checkpoint
        run = checkpoint.run
        head = (f"{self.action} {fmt.plural(len(self.values), 'value')} from {checkpoint.ref} "
                f"({os.path.basename(run.script)}, {checkpoint.description}, {fmt.date_time(checkpoint.time)}) "
                f"in {self.seconds:.2f}s")
        lines = [head + (": " + ", ".join(self.values) if self.values else "")]
        if self.definitions:
            lines.append(f"made again: {', '.join(self.definitions)}")
        if self.removed:
            lines.append(f"removed (made after that cell): {', '.join(self.removed)}")
        if self.skipped:
            lines.append(f"not restored ({len(self.skipped)}), run their cells again:")
            for name, reason, cell in self.skipped:
                where = f"cell [{cell.count}]: {_first_line(cell.source)}" if cell is not None else "no cell defines it"
                lines.append(f"  {name}  {reason}  ({where})")
        return lines

    def __repr__(self) -> str:
        return "\n".join(self.lines)


def _first_line(source: str) -> str:
    lines = [line for line in source.strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return fmt.shorten(text, 60) + (" …" if len(lines) > 1 else "")


def latest_checkpoint(store: api.Store, name: str, exclude: str | None) -> api.Checkpoint:
    """The last checkpoint of the newest other kernel run named `name` (a notebook's path)."""
    for run in api.all_runs(store):
        if run.notebook and run.script == name and run.id != exclude and run.status != "damaged" \
                and run.checkpoint_count:
            return run.checkpoint()
    raise api.NotFound(f"no checkpoint of {os.path.basename(name)} (in {os.path.dirname(name)}) "
                       f"in {store.location} yet")


def _manifests(run: api.Run) -> list[dict[str, Any]]:
    return [checkpoint.manifest for checkpoint in run.checkpoints]


def find_cell_state(runs: list[api.Run], count: int) -> api.Checkpoint:
    """The checkpoint holding the state after cell `count`, in the first of `runs` where that cell ran."""
    problem = None
    for run in runs:
        found = cells_module.cells_of(_manifests(run))
        if not any(cell.count == count for cell in found):
            continue
        try:
            return run.checkpoint(cells_module.state_after(found, count))
        except NotSaved as exc:
            problem = exc
            break
    if problem is not None:
        raise api.NotFound(str(problem))
    tried = ", ".join(run.id for run in runs) or "none"
    raise api.NotFound(f"cell [{count}] has no checkpoint in this notebook's runs ({tried})")


def lineage(run: api.Run, store: api.Store) -> list[api.Run]:
    """`run`, then the run it restored from, and so on (a checkout looks for its cell in that order)."""
    return [run for run, _ in _lineage(run, store)]


def _lineage(run: api.Run, store: api.Store) -> list[tuple[api.Run, int | None]]:
    """`run`, then each run restored from, with the index of the checkpoint the later one restored."""
    found: list[tuple[api.Run, int | None]] = [(run, None)]
    while True:
        ref = found[-1][0].meta.get("restored_from")
        if not isinstance(ref, str):
            return found
        try:
            earlier, selector = api.resolve(ref, store)
        except (api.NotFound, api.StoreError):
            return found
        if earlier.id in {r.id for r, _ in found}:
            return found
        found.append((earlier, int(selector) if selector and selector.isdigit() else None))


def history(checkpoint: api.Checkpoint, store: api.Store) -> list[Cell]:
    """The cells that made the state of `checkpoint`, oldest first: those of the runs its kernel
    restored from (up to what each restored), then its own run's up to it."""
    found: list[Cell] = []
    chain = _lineage(checkpoint.run, store)
    for position, (run, _) in enumerate(chain):
        cells = cells_module.cells_of(_manifests(run))
        index = checkpoint.index if position == 0 else chain[position - 1][1]
        found[:0] = cells_module.upto(cells, index) if index is not None else cells
    return found


def put_back(checkpoint: api.Checkpoint, namespace: dict[str, Any], action: str, known: list[Cell],
             transform: Callable[[str], str], run_statement: Callable[[ast.stmt, Cell], None],
             removable: list[str] | None = None) -> Restored:
    """Put the state of `checkpoint`, which the cells `known` made, into `namespace`; the names
    of `removable` that the checkpoint does not have are removed (a checkout: the state as it
    was after that cell)."""
    started = time.monotonic()
    done = Restored(checkpoint, action)
    manifest = checkpoint.manifest
    definitions = manifest.get("definitions") or {}

    def defined_in(name: str) -> Cell | None:
        return cells_module.defining_cell(known, name, transform)

    statements: dict[int, tuple[tuple[int, int], list[str], ast.stmt, Cell]] = {}
    for name, where in definitions.items():
        problem = _import_definition(name, where, namespace)
        if problem is None:
            done.definitions.append(name)
            continue
        cell = defined_in(name)
        statement = cells_module.definition(cell, name, transform) if cell is not None else None
        if statement is None:
            done.skipped.append((name, problem, cell))
            continue
        position = (next(i for i, known_cell in enumerate(known) if known_cell is cell), statement.lineno)
        statements.setdefault(id(statement), (position, [], statement, cell))[1].append(name)
    later: list[tuple[list[str], ast.stmt, Cell]] = []
    for _, names, statement, cell in sorted(statements.values(), key=lambda found: found[0]):  # as they ran
        try:
            run_statement(statement, cell)
            done.definitions += names
        except NameError:
            later.append((names, statement, cell))  # it needs a value: once the values are back
        except Exception as exc:
            done.skipped += [(name, _failed(exc), cell) for name in names]
    values, failed = checkpoint.load_all()
    if removable is not None:
        kept = set(values) | set(definitions) | {entry["name"] for entry in checkpoint.skipped}
        done.removed = sorted((name for name in removable if name not in kept), key=fmt.natural_key)
        for name in done.removed:
            namespace.pop(name, None)
    namespace.update(values)
    done.values = sorted(values, key=fmt.natural_key)
    for names, statement, cell in later:
        try:
            run_statement(statement, cell)
            done.definitions += names
        except Exception as exc:
            done.skipped += [(name, _failed(exc), cell) for name in names]
    for name, reason in failed.items():
        done.skipped.append((name, reason, defined_in(name)))
    for entry in checkpoint.skipped:
        if entry["name"].isidentifier():
            done.skipped.append((entry["name"], entry["reason"], defined_in(entry["name"])))
    done.seconds = time.monotonic() - started
    return done


def _failed(exc: BaseException) -> str:
    return f"its definition failed ({type(exc).__name__}: {exc})"


def _import_definition(name: str, where: dict[str, str | None], namespace: dict[str, Any]) -> str | None:
    """Bind `name` to the module, function or class it was bound to, imported again by name;
    None when done, else why not (a definition of the notebook's own is made by its cell)."""
    module_name, qualname = where.get("module"), where.get("qualname")
    if not module_name or module_name == "__main__":
        return "defined in the notebook"
    try:
        value: Any = importlib.import_module(module_name)
        for part in (qualname or "").split(".") if qualname else []:
            value = getattr(value, part)
    except Exception as exc:
        return f"cannot be imported again ({type(exc).__name__}: {exc})"
    namespace[name] = value
    return None
