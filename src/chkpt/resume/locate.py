"""Which resume position of the run's script a checkpoint stands for.

A position is in the module frame: before a top-level statement, between two iterations of
a top-level `for`/`while` loop, or before a statement of such a loop's body in the iteration
that was running. A checkpoint taken inside a function stands for the top-level statement
its manifest's `stack` shows running; when that statement calls a top-level function of the
script (`main()`) and the checkpoint was taken in it or below it, the position is also one
inside that function's body, by the same rules; and when main()'s running statement was
calling a top-level function of a user module (`module_call`), one in that function's body.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field

from chkpt.resume.analysis import dotted, first_line, module_aliases, statement_at
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
    NEXT) between two iterations of the loop. With `function`, statement `index` calls that
    top-level function and `inner` is the position in its body (index, body as above).
    `note` says why a function the checkpoint was taken in runs again from its start.
    `started` says whether the statement at the point had started and so runs again from its
    start: "" (a boundary before it), HERE (its own code was running in this frame) or BELOW
    (a function it called was running)."""

    index: int
    body: int | None = None
    function: str | None = None
    inner: Point | None = None
    note: str = field(default="", compare=False)
    started: str = field(default="", compare=False)
    NEXT = -1  # not a field: unannotated
    HERE = "here"
    BELOW = "below"

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
    elsewhere = checkpoint.outside_script
    # taken in one of the user's modules: the stack still shows the script's running statement
    if elsewhere and not any(is_script_module(e) for e in manifest.get("stack") or []):
        raise Refusal(f"it was taken in {checkpoint.file}, not in the script; resume continues only in the "
                      "script's top level and the function it calls (main()), so a checkpoint taken "
                      "there would work", False)
    if checkpoint.label.startswith("thread"):
        raise Refusal("it was taken when a thread crashed, not the script's main flow", False)
    line = module_line(manifest)
    innermost = manifest.get("function") == "<module>" and not elsewhere
    index = old.statement_at(line)
    if index is None:
        raise Refusal(f"line {line} is not inside a top-level statement of the script", False)
    called, note = called_function(old, index, line, manifest.get("stack") or [], run.script)
    if called is not None:
        function, entry_line, innermost = called
        innermost = innermost and not elsewhere
        inner = position(function.body, entry_line, manifest.get("boundary") if innermost else None,
                         innermost and trigger == "explicit", f"{function.name}()", innermost)
        return Point(index, function=function.name, inner=inner, started=Point.BELOW)
    explicit = trigger == "explicit" and innermost
    point = position(old.body, line, manifest.get("boundary") if innermost else None, explicit, "", innermost)
    return Point(point.index, point.body, note=note, started=point.started)


def position(body: list[ast.stmt], line: int, boundary: str | None, explicit: bool, where: str,
             innermost: bool = True) -> Point:
    """The position in `body` (the module's, or that of function `where`) at `line`: its own
    frame's at a `boundary` or `explicit` snapshot(), else that of a frame it was calling
    (`innermost` False: the checkpoint was taken below this frame)."""
    started = Point.HERE if innermost else Point.BELOW
    index = statement_at(body, line)
    of = f" of {where}" if where else " of the script"
    if index is None:
        raise Refusal(f"line {line} is not inside a top-level statement{of}", False)
    stmt = body[index]
    if boundary == "statement" and line == first_line(stmt):
        return Point(index)
    if boundary == "loop" and isinstance(stmt, ast.For | ast.While) and line == stmt.lineno:
        return Point(index, Point.NEXT)
    if isinstance(stmt, ast.For | ast.While) and stmt.body[0].lineno <= line <= body_end(stmt):
        inside = statement_at(stmt.body, line)
        if inside is None:
            raise Refusal(f"line {line} is not inside a statement of the loop's body", False)
        if explicit:
            return next_in_loop(stmt, index, inside) if is_bare_call(stmt.body[inside]) else _in_block(line, of)
        return Point(index, inside, started=started)
    if isinstance(stmt, ast.While) and line < stmt.body[0].lineno:
        return Point(index, Point.NEXT)  # re-testing the condition is what comes next anyway
    if isinstance(stmt, ast.For) and line < stmt.body[0].lineno:
        raise Refusal(f"it was taken while the loop at line {stmt.lineno} fetched its next item", False)
    if explicit:
        return Point(index + 1) if is_bare_call(stmt) else _in_block(line, of)
    return Point(index, started=started)


def called_function(old: Module, index: int, line: int, stack: list[dict[str, Any]],
                    script: str) -> tuple[tuple[ast.FunctionDef, int, bool] | None, str]:
    """The top-level function of the script that top-level statement `index` was calling at
    `line`, with the line it was at and whether the checkpoint was taken in its own frame;
    else None and, when the checkpoint was taken in a function that will run again from its
    start, a sentence saying why resume does not continue inside it."""
    if len(stack) < 2 or stack[0].get("function") != "<module>":
        return None, ""
    entry = stack[1]
    name, entry_line = str(entry.get("function")), entry.get("line")
    function = old.function(name)
    file = entry.get("file")
    if (function is None or not isinstance(entry_line, int) or (file and os.path.abspath(file) != script)
            or not function.body[0].lineno <= entry_line <= (function.end_lineno or function.lineno)):
        if name.startswith("<"):  # a lambda or generator expression: part of the statement anyway
            return None, ""
        if any(isinstance(s, ast.AsyncFunctionDef) and s.name == name for s in old.body):
            return None, (f"{name}() runs again from its start: it is a coroutine (`async def`), which "
                          "resume does not continue inside")
        return None, (f"{name}() runs again from its start: resume continues inside a function only "
                      "when it is defined at the top level of the script")
    why = call_site_problem(old.body[index], line, name)
    if why is None and function.decorator_list:
        why = "it is decorated"
    if why is None and any(isinstance(n, ast.Yield | ast.YieldFrom) for n in walk_own(function)):
        why = "it is a generator"
    if why is not None:
        return None, (f"{name}() runs again from its start: {why}; resume continues inside a function "
                      "called by a top-level statement of its own, or by the first statement of "
                      '`if __name__ == "__main__":`')
    return (function, entry_line, len(stack) == 2), ""


def call_site_problem(stmt: ast.stmt, line: int, name: str) -> str | None:
    """Why top-level statement `stmt`, running at `line`, is no call site to resume `name`()
    inside (None when it is: the statement, or the first of its `if` block, calls it once)."""
    site = stmt
    if isinstance(stmt, ast.If):
        site = stmt.body[0]
        if not first_line(site) <= line <= (site.end_lineno or site.lineno):
            return f"the call at line {line} is not the first statement of the `if` block"
    if not isinstance(site, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign | ast.Raise):
        return f"it is called inside a `{type(site).__name__.lower()}` statement"
    calls = [n for n in walk_own(site) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == name]
    if len(calls) != 1:
        return f"line {first_line(site)} calls it {'more than once' if calls else 'only indirectly'}"
    return None


@dataclass(frozen=True)
class Call:
    """The user-module function main()'s running statement was calling: its stack entry's
    `file`, `module` and `function`, the `line` it was at, and whether the checkpoint was
    taken in its own frame (`innermost`)."""

    file: str
    module: str
    function: str
    line: int
    innermost: bool

    @property
    def qualifier(self) -> str:
        """What its saved locals are qualified by, and how messages name it: `mylib.trainer.fit`."""
        return f"{self.module}.{self.function}"


def module_call(script: Module, body: list[ast.stmt], caller: str, stack: list[dict[str, Any]],
                depth: int = 1) -> tuple[Call, str] | None:
    """The user-module function that `body` (main()'s, `stack[depth]`; the script's top level
    at depth 0) was calling when the checkpoint was taken in or below it, when its running
    statement calls that function once through its module (`mylib.trainer.fit(…)`,
    `trainer.fit(…)`) or a name imported from it (`fit(…)`); None when the checkpoint was taken
    in that frame or in a function of the script. With the Call, why resume does not continue
    inside it ("" when nothing in the script stands in the way); `caller` names the frame."""
    below = depth + 1
    if len(stack) <= below or "file" not in stack[below] or stack[below]["function"].startswith("<"):
        return None
    entry, line = stack[below], stack[depth]["line"]
    module, function = str(entry.get("module")), entry["function"]
    call = Call(entry["file"], module, function, entry["line"], len(stack) == below + 1)
    if "." in function:
        return call, "it is not a top-level function of its module"
    index = statement_at(body, line)
    site = body[index] if index is not None else None
    if isinstance(site, ast.For | ast.While) and site.body[0].lineno <= line:
        inside = statement_at(site.body, line)
        site = site.body[inside] if inside is not None else None
    if not isinstance(site, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign):
        return call, f"line {line} of {caller} is not a statement that calls it"
    imported = imported_modules(script.tree)
    calls = [n for n in walk_own(site) if isinstance(n, ast.Call) and resolved(n.func, imported) == call.qualifier]
    if len(calls) != 1:
        how = "more than once" if calls else "otherwise than through its module or a name imported from it"
        return call, f"line {first_line(site)} of {caller} calls it {how}"
    return call, ""


def imported_modules(tree: ast.Module) -> dict[str, str]:
    """Names the script binds to what it imports (`import a.b`, `import a.b as c`,
    `from a import b`) → the dotted name they stand for."""
    found = module_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
    return found


def resolved(node: ast.expr, imported: dict[str, str]) -> str | None:
    """The dotted name `node` (`trainer.fit`, or `fit` after `from mylib.trainer import fit`)
    stands for through the script's imports (`mylib.trainer.fit`); None for anything else."""
    name = dotted(node) if isinstance(node, ast.Attribute | ast.Name) else None
    root, _, rest = (name or "").partition(".")
    if not name or root not in imported:
        return None
    return f"{imported[root]}.{rest}" if rest else imported[root]


def walk_own(node: ast.AST) -> list[ast.AST]:
    """The nodes of `node`'s own code: not those of the functions, lambdas and classes in it."""
    found: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        found.append(child)
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(child))
    return found


def module_line(manifest: dict[str, Any]) -> int:
    """The line the module frame was at: its own, or that of the top-level statement running."""
    if manifest.get("frame") == "module" or manifest.get("function") == "<module>":
        line = manifest.get("line")
    else:
        line = next((e.get("line") for e in manifest.get("stack") or [] if is_script_module(e)), None)
    if line is None:
        raise Refusal("it does not record which top-level statement of the script was running", False)
    return int(line)


def is_script_module(entry: dict[str, Any]) -> bool:
    """Whether a `stack` entry is the script's module frame (a user module's own has a file)."""
    return entry.get("function") == "<module>" and "file" not in entry


def _in_block(line: int, of: str) -> NoReturn:
    raise Refusal(f"its snapshot() at line {line} is inside a block, not a top-level statement{of}", False)


def body_end(loop: ast.For | ast.While) -> int:
    return loop.body[-1].end_lineno or loop.body[-1].lineno


def is_bare_call(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)


def next_in_loop(loop: ast.For | ast.While, index: int, body: int) -> Point:
    """The position after body statement `body`: the next one, or the next iteration."""
    return Point(index, body + 1 if body + 1 < len(loop.body) else Point.NEXT)
