"""Which resume position of the run's script a checkpoint stands for.

A position is in the module frame: before a top-level statement, between two iterations of
a top-level `for`/`while` loop, or before a statement of such a loop's body in the iteration
that was running. A checkpoint taken inside a function stands for the top-level statement
its manifest's `stack` shows running.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

from chkpt.resume.analysis import first_line
from chkpt.resume.errors import Refusal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from chkpt import api
    from chkpt.resume.analysis import Module


@dataclass(frozen=True)
class Point:
    """A resume position in the old script: before top-level statement `index` (`body` None);
    in a top-level loop, before body statement `body` of the running iteration; or (`body` ==
    NEXT) between two iterations of the loop."""

    index: int
    body: int | None = None
    NEXT = -1  # not a field: unannotated

    @property
    def in_loop(self) -> bool:
        return self.body is not None


def locate(old: Module, checkpoint: api.Checkpoint) -> Point:
    """The resume point a checkpoint stands for, or a Refusal saying why it is none."""
    manifest = checkpoint.manifest
    trigger = checkpoint.trigger
    run = checkpoint.run
    if trigger == "exit":
        if run.status != "finished":
            raise Refusal("its exit checkpoint was not taken at the end of the script", False)
        return Point(len(old.body))
    in_script = not checkpoint.file or os.path.abspath(checkpoint.file) == os.path.abspath(run.script)
    # taken in one of the user's modules: the stack still shows the script's running statement
    if not in_script and not any(e.get("function") == "<module>" for e in manifest.get("stack") or []):
        raise Refusal(f"it was taken in {checkpoint.file}, not in the script", False)
    if checkpoint.label.startswith("thread"):
        raise Refusal("it was taken when a thread crashed, not the script's main flow", False)
    line = module_line(manifest)
    boundary = manifest.get("boundary")
    index = old.statement_at(line)
    if index is None:
        raise Refusal(f"line {line} is not inside a top-level statement of the script", False)
    stmt = old.body[index]
    if boundary == "statement" and line == first_line(stmt):
        return Point(index)
    if boundary == "loop" and isinstance(stmt, ast.For | ast.While) and line == stmt.lineno:
        return Point(index, Point.NEXT)
    explicit = trigger == "explicit" and manifest.get("function") == "<module>"
    if isinstance(stmt, ast.For | ast.While) and stmt.body[0].lineno <= line <= body_end(stmt):
        body = old.statement_at(line, stmt.body)
        if body is None:
            raise Refusal(f"line {line} is not inside a statement of the loop's body", False)
        if explicit:
            return next_in_loop(stmt, index, body) if is_bare_call(stmt.body[body]) else _in_block(line)
        return Point(index, body)
    if isinstance(stmt, ast.While) and line < stmt.body[0].lineno:
        return Point(index, Point.NEXT)  # re-testing the condition is what comes next anyway
    if isinstance(stmt, ast.For) and line < stmt.body[0].lineno:
        raise Refusal(f"it was taken while the loop at line {stmt.lineno} fetched its next item", False)
    if explicit:
        return Point(index + 1) if is_bare_call(stmt) else _in_block(line)
    return Point(index)


def module_line(manifest: dict[str, Any]) -> int:
    """The line the module frame was at: its own, or that of the top-level statement running."""
    if manifest.get("frame") == "module" or manifest.get("function") == "<module>":
        line = manifest.get("line")
    else:
        line = next((e.get("line") for e in manifest.get("stack") or [] if e.get("function") == "<module>"),
                    None)
    if line is None:
        raise Refusal("it does not record which top-level statement of the script was running", False)
    return int(line)


def _in_block(line: int) -> NoReturn:
    raise Refusal(f"its snapshot() at line {line} is inside a block, not a top-level statement", False)


def body_end(loop: ast.For | ast.While) -> int:
    return loop.body[-1].end_lineno or loop.body[-1].lineno


def is_bare_call(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)


def next_in_loop(loop: ast.For | ast.While, index: int, body: int) -> Point:
    """The position after body statement `body`: the next one, or the next iteration."""
    return Point(index, body + 1 if body + 1 < len(loop.body) else Point.NEXT)
