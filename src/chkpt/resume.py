"""`chkpt resume SCRIPT [--from REF] [--force] [-- ARGS…]`: run an edited script again from a
checkpoint instead of from the start (SPEC §8; docs/resume.md explains the rules).

A resume point is a position in the module frame of the script as it was when the run
started (its source is kept in the store): before a top-level statement, between two
iterations of a top-level `for`/`while` loop, or before a statement of such a loop's body in
the iteration that was running. The edited script is lined up with the old one statement by
statement; then a prelude runs untraced and silent — definitions and imports before the point,
plus the statements that recompute values the checkpoint could not save (found by a
dependency analysis of the module's AST) — the saved values are put back, and the rest of the
edited script runs traced as a normal run, compiled from a rewritten AST with the script's own
file name so line numbers and tracebacks stay right. Where this cannot give what a fresh run
of the edited script would, resume refuses with one sentence; `--force` overrides the refusals
that are about correctness, not those that leave nothing to run.

Only the CLI imports this module.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import contextlib
import copy
import difflib
import io
import itertools
import os
import symtable
import sys

from chkpt import api, naming, runner
from chkpt import config as config_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import CodeType
    from typing import Any, NoReturn

HELPER = "__chkpt_resume__"  # the name the rewritten loop reaches the Resumer by (in builtins)
COMPREHENSIONS = ("listcomp", "setcomp", "dictcomp", "genexpr")


class Refusal(Exception):
    """Resuming from this checkpoint cannot be right; the message is one sentence.

    `forceable` refusals are about correctness (--force overrides them); the others leave
    chkpt with no way to resume at all.
    """

    def __init__(self, message: str, forceable: bool = True) -> None:
        super().__init__(message)
        self.forceable = forceable


# -- static facts about statements ---------------------------------------------------------------

def is_definition(stmt: ast.stmt) -> bool:
    """def/class/import, a lambda assignment and the docstring: cheap, always re-run, may be edited."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom):
        return True
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Lambda):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
        stmt.value.value, str)


def first_line(stmt: ast.stmt) -> int:
    return min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])


def root_name(node: ast.expr) -> str | None:
    """`a` for `a`, `a.b[1].c`; None for anything not rooted in a plain name."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class Facts:
    """What one top-level statement reads, binds and mutates, by name."""

    def __init__(self, stmt: ast.stmt) -> None:
        self.stmt = stmt
        self.loads: set[str] = set()     # read while the statement runs
        self.deferred: set[str] = set()  # read by the functions/lambdas it defines, when called
        self.binds: set[str] = set()
        self.mutates: set[str] = set()
        self.global_writes: set[str] = set()  # assigned through `global` in functions it defines
        self._scan(symtable.symtable(ast.unparse(stmt), "<chkpt>", "exec"), executed=True, top=True)
        self._walk(stmt)

    def _scan(self, table: symtable.SymbolTable, executed: bool, top: bool) -> None:
        for symbol in table.get_symbols():
            name = symbol.get_name()
            if top:
                if symbol.is_referenced():
                    self.loads.add(name)
                if symbol.is_assigned() or symbol.is_imported():
                    self.binds.add(name)
            elif symbol.is_declared_global() and symbol.is_assigned():
                self.global_writes.add(name)
                self.deferred.add(name)
            elif symbol.is_global() and symbol.is_referenced():
                (self.loads if executed else self.deferred).add(name)
        for child in table.get_children():
            runs_now = str(child.get_type()) == "class" or child.get_name() in COMPREHENSIONS
            self._scan(child, executed and runs_now, top=False)

    def _walk(self, node: ast.AST) -> None:
        """Mutations through attributes, subscripts and method calls (`a.x = …`, `a.append(…)`)."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                for part in (*child.args.defaults, *child.args.kw_defaults,
                             *getattr(child, "decorator_list", [])):
                    if part is not None:
                        self._walk(part)
                continue
            if isinstance(child, ast.Attribute | ast.Subscript) and isinstance(child.ctx, ast.Store | ast.Del):
                self._mutated(child)
            elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                self._mutated(child.func.value)
            elif isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
                self.loads.add(child.target.id)  # symtable counts `x += 1` as a bind only
            self._walk(child)

    def _mutated(self, node: ast.expr) -> None:
        name = root_name(node)
        if name is not None:
            self.mutates.add(name)


class Module:
    """The facts of every top-level statement of one version of the script."""

    def __init__(self, source: bytes | str, filename: str) -> None:
        self.tree = ast.parse(source, filename)
        self.body = self.tree.body
        self.facts = [Facts(stmt) for stmt in self.body]
        self.body_needs: dict[str, set[str]] = {}  # function/class name → globals its code reads
        self.global_writers: dict[str, set[str]] = {}  # function name → globals it assigns
        for facts in self.facts:
            for name in facts.binds:
                self.body_needs.setdefault(name, set()).update(facts.deferred)
                if facts.global_writes:
                    self.global_writers.setdefault(name, set()).update(facts.global_writes)

    def closure(self, names: Iterable[str]) -> set[str]:
        """`names` and every global the functions among them read, transitively."""
        found = set(names)
        todo = list(found)
        while todo:
            for name in self.body_needs.get(todo.pop(), ()):
                if name not in found:
                    found.add(name)
                    todo.append(name)
        return found

    def reads(self, index: int) -> set[str]:
        return self.closure(self.facts[index].loads)

    def touches(self, index: int) -> set[str]:
        """Names statement `index` binds or mutates, itself or through the functions it calls."""
        facts = self.facts[index]
        touched = facts.binds | facts.mutates
        for name in self.reads(index):
            touched |= self.global_writers.get(name, set())
        return touched

    def statement_at(self, line: int, body: list[ast.stmt] | None = None) -> int | None:
        """Index of the statement of `body` (default: the module's) whose lines hold `line`."""
        for index, stmt in enumerate(self.body if body is None else body):
            if first_line(stmt) <= line <= (stmt.end_lineno or stmt.lineno):
                return index
        return None


# -- where a checkpoint was taken -------------------------------------------------------------------

class Point:
    """A resume position in the old script: before top-level statement `index` (`body` None);
    in a top-level loop, before body statement `body` of the running iteration; or (`body` ==
    NEXT) between two iterations of the loop."""

    NEXT = -1

    def __init__(self, index: int, body: int | None = None) -> None:
        self.index = index
        self.body = body

    @property
    def in_loop(self) -> bool:
        return self.body is not None


def locate(old: Module, checkpoint: api.Checkpoint, run: api.Run) -> Point:
    """The resume point a checkpoint stands for, or a Refusal saying why it is none."""
    manifest = checkpoint.manifest
    trigger = checkpoint.trigger
    if trigger == "exit":
        if run.status != "finished":
            raise Refusal("its exit checkpoint was not taken at the end of the script", False)
        return Point(len(old.body))
    if checkpoint.file and os.path.abspath(checkpoint.file) != os.path.abspath(run.script):
        raise Refusal(f"it was taken in {checkpoint.file}, not in the script", False)
    if checkpoint.label.startswith("thread"):
        raise Refusal("it was taken when a thread crashed, not the script's main flow", False)
    line = module_line(old, manifest)
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
    if isinstance(stmt, ast.For | ast.While) and line >= stmt.body[0].lineno and line <= body_end(stmt):
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


def _in_block(line: int) -> NoReturn:
    raise Refusal(f"its snapshot() at line {line} is inside a block, not a top-level statement", False)


def body_end(loop: ast.For | ast.While) -> int:
    return loop.body[-1].end_lineno or loop.body[-1].lineno


def is_bare_call(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)


def next_in_loop(loop: ast.For | ast.While, index: int, body: int) -> Point:
    return Point(index, body + 1 if body + 1 < len(loop.body) else Point.NEXT)


def module_line(old: Module, manifest: dict[str, Any]) -> int:
    """The line the module frame was at: its own, or the top-level statement that was running."""
    function, line = manifest.get("function"), manifest.get("line")
    if manifest.get("frame") == "module" or function == "<module>":
        return int(line)
    for entry in manifest.get("stack") or []:
        if entry.get("function") == "<module>":
            return int(entry["line"])
    if not function or line is None:
        raise Refusal("it does not record where in the script it was taken", False)
    # Older manifests name only the innermost function: find the one statement that calls it.
    callers = [i for i in range(len(old.body))
               if not is_definition(old.body[i]) and function in old.reads(i)]
    stmt = old.body[callers[0]] if len(callers) == 1 else None
    if isinstance(stmt, ast.For | ast.While):
        inner = [s for s in stmt.body if function in old.closure(Facts(s).loads)]
        stmt = inner[0] if len(inner) == 1 else None
    if stmt is None:
        raise Refusal(f"it was taken inside {function}() and chkpt cannot tell which top-level "
                      "statement was running", False)
    return stmt.lineno


# -- lining the edited script up with the old one --------------------------------------------------

def statement_key(stmt: ast.stmt) -> str:
    """Equal for the same statement; definitions match by what they define, so edits show."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return f"def {stmt.name}"
    if is_definition(stmt) and not isinstance(stmt, ast.Import | ast.ImportFrom):
        return "def " + ast.dump(getattr(stmt, "targets", [None])[0] or ast.Constant(None))
    return ast.dump(stmt)


def definitions(body: list[ast.stmt]) -> dict[str, str]:
    """name → what the definitions of `body` bind it to (later ones win)."""
    bound: dict[str, str] = {}
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                name = (alias.asname or alias.name).split(".")[0]
                bound[name] = ast.dump(stmt) if alias.name == "*" else f"{getattr(stmt, 'module', '')}:{alias.name}"
        elif is_definition(stmt) and not isinstance(stmt, ast.Expr):
            for name in Facts(stmt).binds:
                bound[name] = ast.dump(stmt)
    return bound


def describe(stmt: ast.stmt) -> str:
    text = ast.unparse(stmt).splitlines()[0]
    return text if len(text) <= 50 else text[:47] + "..."


class Alignment:
    """Where the old resume point is in the edited script, and what changed before it."""

    def __init__(self, old: Module, new: Module, point: Point) -> None:
        self.problems: list[str] = []
        i = point.index
        matcher = difflib.SequenceMatcher(None, [statement_key(s) for s in old.body],
                                          [statement_key(s) for s in new.body], autojunk=False)
        self.index = len(new.body)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if i1 >= i:  # wholly at or after the point (insertions just before it run after it)
                self.index = min(self.index, j1)
                break
            if i2 > i:  # straddles the point
                self.index = j1 + (i - i1 if tag == "equal" else min(i - i1, j2 - j1))
            if tag != "equal":
                self._changed(old.body[i1:min(i2, i)], new.body[j1:j2 if i2 <= i else self.index])
        while self.index < len(new.body) and is_definition(new.body[self.index]) and not point.in_loop:
            self.index += 1  # definitions right at the point run in the prelude
        old_defs = definitions(old.body[:i])
        new_defs = definitions(new.body[:self.index])
        self.edited = {n for n in old_defs.keys() | new_defs.keys() if old_defs.get(n) != new_defs.get(n)}

    def _changed(self, removed: list[ast.stmt], added: list[ast.stmt]) -> None:
        removed = [s for s in removed if not is_definition(s)]
        added = [s for s in added if not is_definition(s)]
        if removed and added:
            self.problems.append(f"line {added[0].lineno} ({describe(added[0])}), before the resume "
                                 f"point, was changed since the run (it was: {describe(removed[0])})")
        elif added:
            self.problems.append(f"line {added[0].lineno} ({describe(added[0])}) was added before "
                                 "the resume point")
        elif removed:
            self.problems.append(f"the statement {describe(removed[0])} (line {removed[0].lineno} in "
                                 "the run's script), before the resume point, was removed")


# -- the plan ----------------------------------------------------------------------------------------

def target_names(loop: ast.For | ast.While) -> set[str]:
    if isinstance(loop, ast.While):
        return set()
    return {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}


def enumerate_counter(loop: ast.For) -> str | None:
    """The counter name of `for i, x in enumerate(…)`, else None."""
    call, target = loop.iter, loop.target
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "enumerate"
            and isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name)):
        return target.elts[0].id
    return None


class Plan:
    """For one checkpoint: where to continue, what to restore and what to re-run first."""

    def __init__(self, run: api.Run, checkpoint: api.Checkpoint, old: Module, new: Module,
                 force: bool) -> None:
        self.run = run
        self.checkpoint = checkpoint
        self.old = old
        self.new = new
        self.force = force
        self.point = locate(old, checkpoint, run)
        alignment = Alignment(old, new, self.point)
        for problem in alignment.problems:
            self.check(problem)
        self.index = alignment.index
        self.loop = self._same_loop() if self.point.in_loop else None
        self.restored, self.overlays = self._saved()
        self.needed = new.closure(set().union(*(new.facts[i].loads for i in range(self.index, len(new.body)))))
        self.rerun, self.inputs = self._reruns()
        self._check_edits(alignment.edited)
        if self.loop is not None:
            self._check_loop_state()

    def check(self, message: str) -> None:
        if not self.force:
            raise Refusal(message)

    @property
    def ref(self) -> str:
        return f"{self.run.id}@{self.checkpoint.index}"

    def _same_loop(self) -> ast.For | ast.While:
        """The edited script's counterpart of the loop the checkpoint was taken in."""
        old_loop = self.old.body[self.point.index]
        new = self.new.body[self.index] if self.index < len(self.new.body) else None
        if isinstance(old_loop, ast.For) and isinstance(new, ast.For):
            same = [ast.dump(new.target), ast.dump(new.iter)] == [ast.dump(old_loop.target), ast.dump(old_loop.iter)]
        else:
            same = isinstance(old_loop, ast.While) and isinstance(new, ast.While)
        if not same:
            raise Refusal(f"the script no longer has the loop `{describe(old_loop)}` (line "
                          f"{old_loop.lineno} of the run's script) where it was", False)
        assert isinstance(new, ast.For | ast.While) and isinstance(old_loop, ast.For | ast.While)
        done = self.point.body if self.point.body != Point.NEXT else 0
        if [ast.dump(s) for s in old_loop.body[:done]] != [ast.dump(s) for s in new.body[:done]]:
            self.check(f"the loop body above line {old_loop.body[done].lineno} already ran in the "
                       "iteration being resumed, but was changed since the run")
        if isinstance(new, ast.For):
            counter = enumerate_counter(new)
            wanted = {counter} if counter else target_names(new)
            saved = {v.name for v in self.checkpoint.variables} | set(self.checkpoint.aliases)
            if not wanted <= saved:
                raise Refusal(f"the loop variable {sorted(wanted - saved)[0]} was not saved, so chkpt "
                              "cannot tell which iteration was running", False)
        return new

    def _saved(self) -> tuple[dict[str, str], dict[str, str]]:
        """Globals to restore (name → saved name) and nested paths to put into rebuilt objects."""
        module_names = set().union(*(f.binds for f in self.old.facts))
        # an object saved with a placeholder for an unsaveable part (`parts['lock']`) is rebuilt
        incomplete = {naming.root_of(s["name"]) for s in self.checkpoint.skipped}
        restored: dict[str, str] = {}
        overlays: dict[str, str] = {}
        for variable in self.checkpoint.variables:
            if variable.scope != "global":
                continue
            if not variable.name.isidentifier():
                overlays[variable.name] = variable.name
            elif variable.name not in incomplete:
                restored[variable.name] = variable.name
        for alias, target in self.checkpoint.aliases.items():
            if alias.isidentifier() and alias in module_names:
                restored.setdefault(alias, target)
            elif naming.root_of(alias) in module_names:
                overlays.setdefault(alias, target)
        overlays = {path: saved for path, saved in overlays.items() if naming.root_of(path) not in restored}
        return restored, overlays

    def _reruns(self) -> tuple[list[int], dict[int, set[str]]]:
        """Statements before the point to run again, and the saved values each needs first.

        Definitions always run again. A value read from the point on is restored when it was
        saved; otherwise the statements before the point that bind or mutate it run again, and
        so on for what they read. A saved value stands in for what a re-run statement reads
        only if nothing from that statement to the point changed it. An object whose parts
        were saved (`model.weights`) is rebuilt by its assignments only, then gets the parts.
        """
        new = self.new
        rebuilt = {naming.root_of(path) for path in self.overlays}
        rerun = {i for i in range(self.index) if is_definition(new.body[i])}
        inputs: dict[int, set[str]] = {}
        todo = [(name, self.index) for name in self.needed | rebuilt]
        todo += [(name, i) for i in rerun for name in new.reads(i)]
        seen: set[tuple[str, int]] = set()
        while todo:
            name, before = todo.pop()
            if (name, before) in seen:
                continue
            seen.add((name, before))
            if name in self.restored and not any(name in new.touches(k) for k in range(before, self.index)):
                if before < self.index:
                    inputs.setdefault(before, set()).add(name)
                continue
            binders = [k for k in range(before) if name in new.touches(k)]
            if name in rebuilt:
                binders = [k for k in binders if name in new.facts[k].binds] or binders
            for k in binders:
                if k not in rerun:
                    rerun.add(k)
                    todo += [(n, k) for n in new.reads(k)]
        return sorted(rerun), inputs

    def _check_edits(self, edited: set[str]) -> None:
        """A definition edited since the run must not have fed a result that is kept."""
        rerun_keys = {statement_key(self.new.body[i]) for i in self.rerun}
        for stmt, facts in zip(self.old.body[: self.point.index], self.old.facts, strict=False):
            if is_definition(stmt) or statement_key(stmt) in rerun_keys:
                continue
            used = edited & self.old.closure(facts.loads)
            if used:
                name = sorted(used)[0]
                self.check(f"{name} was changed since the run, but line {stmt.lineno} "
                           f"(`{describe(stmt)}`), before the resume point, already ran the old one "
                           "and its result is kept")

    def _check_loop_state(self) -> None:
        """What the loop reads or changes must come back saved: re-running the statements
        before it would give the values from before its first iteration."""
        assert self.loop is not None
        facts = self.old.facts[self.point.index]
        changed = self.old.touches(self.point.index)
        for name in sorted(((facts.loads | changed) & self.needed) - set(self.restored) - target_names(self.loop)):
            computed = [k for k in range(self.index)
                        if name in self.new.touches(k) and not is_definition(self.new.body[k])]
            if computed or name in changed - facts.mutates:  # `np.zeros(…)` changes no value
                self.check(f"{name} is used by the loop at line {self.loop.lineno} but was not saved, "
                           "so its value in the middle of the loop cannot be recreated")

    # -- what it tells the user ---------------------------------------------------------------------

    def summary(self) -> list[str]:
        checkpoint = self.checkpoint
        where = f" at line {checkpoint.line}" if checkpoint.line else ""
        lines = [f"resuming {os.path.basename(self.run.script)} from {self.ref} "
                 f"({checkpoint.trigger}{where})"]
        names = sorted(self.restored) + sorted(self.overlays)
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        lines.append(f"restored {len(names)} value{'s' if len(names) != 1 else ''}"
                     + (f": {shown}" if names else ""))
        definitions = [i for i in self.rerun if is_definition(self.new.body[i])]
        others = [f"line {self.new.body[i].lineno} (`{describe(self.new.body[i])}`)"
                  for i in self.rerun if i not in definitions]
        parts = ([f"{len(definitions)} import/definition statement{'s' if len(definitions) != 1 else ''}"]
                 if definitions else []) + others
        lines.append("re-ran " + (", ".join(parts) if parts else "nothing"))
        return lines

    def where(self, globals_: dict[str, Any]) -> str:
        new = self.new
        if self.loop is None:
            if self.index >= len(new.body):
                return "at the end of the script (nothing after it to run)"
            return f"continuing at line {new.body[self.index].lineno}"
        state = ", ".join(f"{n} = {_short(globals_.get(n))}" for n in sorted(target_names(self.loop)))
        state = f" ({state})" if state else ""
        if self.point.body == Point.NEXT:
            return f"continuing the loop at line {self.loop.lineno} after the iteration{state}"
        assert self.point.body is not None
        return (f"continuing at line {self.loop.body[self.point.body].lineno}, in the iteration{state} "
                f"of the loop at line {self.loop.lineno}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


# -- running it -----------------------------------------------------------------------------------------

class Resumer:
    """What the rewritten loop asks, as builtins.__chkpt_resume__ (the script's globals stay
    as a fresh run's): the rest of its items, and whether it is in the partial iteration."""

    def __init__(self, remaining: Iterator[Any] | None) -> None:
        self._remaining = remaining
        self._partial = True

    def rest(self) -> Iterator[Any] | None:
        return self._remaining

    def pending(self) -> bool:
        return self._partial

    def partial(self) -> bool:
        was, self._partial = self._partial, False
        return was


def _helper(method: str, node: ast.AST) -> ast.Call:
    call = ast.Call(ast.Attribute(ast.Name(HELPER, ast.Load()), method, ast.Load()), [], [])
    return ast.copy_location(call, node)


def rewrite_loop(loop: ast.For | ast.While, point: Point) -> ast.For | ast.While:
    """The loop as it must run from the resume point: the items left, the partial iteration
    (the body from the resume statement on), then whole iterations."""
    loop = copy.deepcopy(loop)
    if isinstance(loop, ast.For):
        loop.iter = _helper("rest", loop.iter)
    if point.body not in (None, Point.NEXT):
        assert point.body is not None
        if isinstance(loop, ast.While):
            loop.test = ast.copy_location(ast.BoolOp(ast.Or(), [_helper("pending", loop.test), loop.test]),
                                          loop.test)
        partial = ast.If(_helper("partial", loop.body[0]), copy.deepcopy(loop.body[point.body:]), loop.body)
        loop.body = [ast.copy_location(partial, loop.body[0])]
    return ast.fix_missing_locations(loop)


def remaining_items(loop: ast.For, point: Point, globals_: dict[str, Any]) -> Iterator[Any]:
    """The loop's items from the one to continue with, its iterable evaluated afresh."""
    filename = globals_["__file__"]

    def evaluate(node: ast.expr) -> Any:
        expr = ast.Expression(ast.fix_missing_locations(_as_load(node)))
        return eval(compile(expr, filename, "eval"), globals_)

    iterable = evaluate(loop.iter)
    counter = enumerate_counter(loop)
    if counter is not None:
        start_node = loop.iter.args[1] if len(loop.iter.args) > 1 else next(  # type: ignore[attr-defined]
            (k.value for k in loop.iter.keywords if k.arg == "start"), None)  # type: ignore[attr-defined]
        position = globals_[counter] - (evaluate(start_node) if start_node is not None else 0)
    else:
        position = _position(iterable, evaluate(loop.target), loop)
    skip = position + (1 if point.body == Point.NEXT else 0)
    if isinstance(iterable, range):
        return iter(iterable[skip:])
    return itertools.islice(iter(iterable), skip, None)


def _as_load(node: ast.expr) -> ast.expr:
    node = copy.deepcopy(node)
    for child in ast.walk(node):
        if hasattr(child, "ctx"):
            child.ctx = ast.Load()  # type: ignore[attr-defined]
    return node


def _position(iterable: Any, value: Any, loop: ast.For) -> int:
    """Which item of a range or sequence the loop variable holds (it must be unambiguous)."""
    if isinstance(iterable, range):
        try:
            return iterable.index(value)
        except ValueError:
            raise Refusal(f"{_short(value)} is no longer an item of the loop at line {loop.lineno}", False) from None
    if iter(iterable) is iterable:
        raise Refusal(f"the loop at line {loop.lineno} iterates over a {type(iterable).__name__}, which "
                      "cannot be restarted part-way (range, enumerate() or a sequence can)", False)
    matches = [k for k, item in enumerate(iterable) if _same(item, value)]
    if len(matches) != 1:
        how = "is not" if not matches else f"occurs {len(matches)} times"
        raise Refusal(f"the loop variable's value {_short(value)} {how} in the items of the loop at "
                      f"line {loop.lineno}, so chkpt cannot tell which iteration was running", False)
    return matches[0]


def _same(item: Any, value: Any) -> bool:
    if item is value:
        return True
    try:
        return bool(item == value)
    except Exception:
        return False


class Values:
    """The checkpoint's values, each loaded once; a part shared by two of them stays shared."""

    def __init__(self, checkpoint: api.Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._parts: dict[str, Any] = {}

    def get(self, saved: str) -> Any:
        if saved not in self._parts:
            self._parts[saved] = self.checkpoint.variable(saved).load(self._parts)
        return self._parts[saved]


def future_flags(tree: ast.Module) -> int:
    flags = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            for alias in stmt.names:
                flags |= getattr(__future__, alias.name).compiler_flag
    return flags


def run_prelude(plan: Plan, globals_: dict[str, Any], flags: int) -> None:
    """Re-run the chosen statements (their output was seen in the run), then restore."""
    filename = globals_["__file__"]
    values = Values(plan.checkpoint)
    with contextlib.redirect_stdout(io.StringIO()):
        for index in plan.rerun:
            for name in plan.inputs.get(index, ()):
                globals_[name] = values.get(plan.restored[name])
            module = ast.Module([plan.new.body[index]], [])
            exec(compile(module, filename, "exec", flags, dont_inherit=True), globals_)
    for name, saved in plan.restored.items():
        globals_[name] = values.get(saved)
    for path, saved in plan.overlays.items():
        try:
            # a part of a restored object is taken from it, so shared objects stay shared
            value = eval(saved, globals_) if naming.root_of(saved) in plan.restored else values.get(saved)
            exec(f"{path} = __chkpt_value__", globals_, {"__chkpt_value__": value})
        except Exception as exc:
            print(f"chkpt: could not put {path} back ({type(exc).__name__}: {exc}); it keeps its "
                  "recomputed value", file=sys.stderr)


def execute(plan: Plan, path: str, args: list[str]) -> int:
    """Run the plan as `python path args…` would run the script, then hand over to the runner."""
    globals_ = runner.prepare_script(path, args)
    filename = globals_["__file__"]
    flags = future_flags(plan.new.tree)
    body = list(plan.new.body[plan.index:])
    try:
        run_prelude(plan, globals_, flags)
        if plan.loop is not None:
            remaining = remaining_items(plan.loop, plan.point, globals_) if isinstance(plan.loop, ast.For) else None
            builtins.__dict__[HELPER] = Resumer(remaining)
            body[0] = rewrite_loop(plan.loop, plan.point)
    except Refusal as refusal:
        print(f"chkpt: cannot resume from {plan.ref}: {refusal}", file=sys.stderr)
        return 2
    except (api.NotFound, api.LoadError) as exc:
        print(f"chkpt: cannot resume from {plan.ref}: {exc}", file=sys.stderr)
        return 2
    except SystemExit:
        raise
    except BaseException as exc:
        print("chkpt: re-running the statements before the resume point failed:", file=sys.stderr)
        runner.report_unhandled(exc)
        return 1
    for line in [*plan.summary(), plan.where(globals_)]:
        print(f"chkpt: {line}", file=sys.stderr)
    code: CodeType = compile(ast.Module(body, []), filename, "exec", flags, dont_inherit=True)
    config = config_module.load(os.path.dirname(filename))
    runner.execute(code, globals_, config, {"resumed_from": plan.ref})
    return 0


# -- choosing the checkpoint and the command line ------------------------------------------------------

def old_module(run: api.Run) -> Module:
    source = run.meta.get("source")
    if (run.meta.get("argv") or [""])[0] == "-m":
        raise Refusal(f"run {run.id} was started with python -m, which resume does not support", False)
    if not source:
        raise Refusal(f"run {run.id} did not keep its script's source (made by an older chkpt)", False)
    data = bytes(run.store.read_blob(source["hash"], source.get("size")))
    return Module(data, run.script)


def choose(script: str, ref: str | None, new: Module, force: bool) -> Plan:
    """The plan for REF, or for the latest checkpoint that can be resumed from."""
    store = api.default_store()
    if ref is not None:
        run, selector = api.resolve(ref, store, script)
        candidates = [(run, [run.checkpoint(selector)] if selector else run.checkpoints[::-1])]
    else:
        candidates = [(run, run.checkpoints[::-1]) for run in api.runs(script, store)]
        if not candidates:
            raise api.NotFound(f"no run of {script} in {store.root}")
    refusals: list[tuple[str, Refusal]] = []
    for run, checkpoints in candidates:
        try:
            old = old_module(run)
        except (Refusal, SyntaxError, ValueError, api.StoreError) as exc:
            refusal = exc if isinstance(exc, Refusal) else Refusal(f"the run's script cannot be read ({exc})", False)
            refusals.append((run.id, refusal))
            continue
        for checkpoint in checkpoints:
            try:
                return Plan(run, checkpoint, old, new, force)
            except Refusal as refusal:
                refusals.append((f"{run.id}@{checkpoint.index}", refusal))
    if not refusals:
        raise api.NotFound(f"no checkpoint of {script} to resume from")
    where, refusal = next(((w, r) for w, r in refusals if r.forceable), refusals[0])
    hint = " (--force resumes anyway)" if refusal.forceable else ""
    raise Refusal(f"cannot resume from {where}: {refusal}{hint}", refusal.forceable)


def resume_script(script: str, ref: str | None = None, force: bool = False,
                  args: list[str] | None = None) -> int:
    """`chkpt resume`: exit status 2 when it will not resume, else the script's own.

    `args` are the script's arguments; None: those of the run resumed.
    """
    try:
        try:
            with open(script, "rb") as handle:
                source = handle.read()
            new = Module(source, os.path.join(os.getcwd(), script))
        except OSError as exc:
            raise api.NotFound(f"can't open file {script!r}: {exc.strerror}") from None
        except SyntaxError as exc:
            raise api.NotFound(f"{script} does not compile: {exc.msg} (line {exc.lineno})") from None
        plan = choose(script, ref, new, force)
    except (Refusal, api.NotFound, api.StoreError) as exc:
        print(f"chkpt: {exc}", file=sys.stderr)
        return 2
    if args is None:
        argv0 = plan.run.meta.get("argv") or [script]
        args = list(argv0[1:])
    return execute(plan, script, args)
