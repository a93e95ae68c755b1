"""What to restore and what to re-run to resume from one checkpoint, or why not.

A value the code from the resume point on reads is restored when the checkpoint saved it;
otherwise the statements before the point that bind or change it are re-run, and so on for
what those read. Definitions and imports before the point always re-run, in their edited
version. A Plan is built from the manifest alone: no value is loaded. When the point is
inside `main()` (a top-level function a top-level statement calls), the same is done for that
function's body and its locals (`Plan.inner`), and the top-level statement runs again, calling
a `main()` that continues there; one level deeper, for the user-module function main() was
calling (`Plan.callee`), from the module's source the checkpoint kept. When the resumed run
gets other arguments than the run's, what the statements before the point computed from the
program's arguments (and from those values, onwards) is not restored: they re-run.
"""

from __future__ import annotations

import ast
import os

from chkpt import api, naming
from chkpt.resume.align import Alignment, definitions, describe, statement_key
from chkpt.resume.analysis import (
    Block,
    Module,
    dotted,
    enumerate_counter,
    first_line,
    function_locals,
    is_definition,
    keeps,
    keeps_what_it_is_given,
    reads_arguments,
    root_name,
    target_names,
)
from chkpt.resume.errors import Refusal
from chkpt.resume.locate import Call, Point, is_script_module, locate, module_call, position, walk_own


class Frame:
    """What to restore and re-run in one frame, the module's or main()'s: where to continue
    (`index` in the edited body, `loop` when in a loop), what to restore (`restored`,
    `overlays`), and what to re-run first (`rerun`, with the saved values each re-run
    statement reads in `inputs`). `scope` limits the names to a function's locals."""

    old: Block
    new: Block
    point: Point
    scope: set[str] | None = None
    depth = 0  # its frame's place on the manifest's stack below the script's module frame

    def __init__(self, plan: Plan, alignment: Alignment, edited: set[str]) -> None:
        self.plan = plan
        for problem in alignment.problems:
            plan.check(problem)
        self.index = alignment.index
        self.restored, self.overlays, incomplete = self._saved()
        self.stale, stale_names = self._stale() if plan.arguments_changed else ([], set())
        self.restored = {n: saved for n, saved in self.restored.items() if n not in stale_names}
        self.overlays = {p: saved for p, saved in self.overlays.items() if naming.root_of(p) not in stale_names}
        self.stale_names = stale_names
        self.loop = self._same_loop() if self.point.in_loop else None
        loads = set().union(*(self.new.facts[i].loads for i in range(self.index, len(self.new.body))))
        self.needed = self._ours(self.new.closure(loads))
        self._check_incomplete(incomplete)
        self.rerun, self.inputs = self._reruns()
        self._check_edits(edited)
        if self.loop is not None:
            self._check_loop_state()

    def _ours(self, names: set[str]) -> set[str]:
        return names if self.scope is None else names & self.scope

    def _saved(self) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """The names to restore (→ saved name), the nested paths to put into rebuilt objects,
        and the names saved only in part that cannot be rebuilt so."""
        raise NotImplementedError

    def _stale(self) -> tuple[list[int], set[str]]:
        """The statements before the point that computed from the old arguments (reading them,
        or what such a statement bound or changed), and the names they bind or change."""
        stale: list[int] = []
        names: set[str] = set()
        for k in range(self.index):
            if is_definition(self.new.body[k]):
                continue
            if self._reads_arguments(k) or self._ours(self.new.reads(k)) & names:
                stale.append(k)
                names |= self._ours(self.new.touches(k))
        return stale, names

    def _reads_arguments(self, index: int) -> bool:
        """Whether statement `index` of the edited body reads the program's arguments."""
        return self.new.reads_arguments(index)

    def passes_arguments(self, function: str) -> bool:
        """Whether the statement at the point calls `function` with what the program's arguments
        give: read there, or computed from them by a statement before it."""
        module = self.plan.new
        for call in ast.walk(self.new.body[self.index]):
            if isinstance(call, ast.Call) and (dotted(call.func) or "").rpartition(".")[2] == function:
                for part in (*call.args, *call.keywords):
                    names = {n.id for n in ast.walk(part) if isinstance(n, ast.Name)}
                    if reads_arguments(part, self.new.modules) or names & (self.stale_names | module.argument_readers):
                        return True
        return False

    def _check_incomplete(self, incomplete: set[str]) -> None:
        """What to do about the names saved only in part: nothing at the top level (overlays)."""

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
            self.plan.check(f"the loop body above line {old_loop.body[done].lineno} already ran in the "
                            "iteration being resumed, but was changed since the run")
        if isinstance(new, ast.For):
            counter = enumerate_counter(new)
            wanted = {counter} if counter else target_names(new)
            if not wanted <= set(self.restored):
                raise Refusal(f"the loop variable {sorted(wanted - set(self.restored))[0]} was not saved, "
                              "so chkpt cannot tell which iteration was running", False)
        return new

    def _reruns(self) -> tuple[list[int], dict[int, set[str]]]:
        """Statements before the point to run again, and the saved values each needs first.

        A saved value stands in for what a re-run statement reads only if nothing from that
        statement to the point changed it. An object whose parts were saved (`model.weights`)
        is rebuilt by its assignments only, then gets the parts.
        """
        new = self.new
        rebuilt = {naming.root_of(path) for path in self.overlays}
        rerun = {i for i in range(self.index) if is_definition(new.body[i])}
        inputs: dict[int, set[str]] = {}
        todo = [(name, self.index) for name in self.needed | rebuilt]
        todo += [(name, i) for i in rerun for name in self._ours(new.reads(i))]
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
                    todo += [(n, k) for n in self._ours(new.reads(k))]
        return sorted(rerun), inputs

    def _uses(self, names: set[str]) -> set[str]:
        """What the code reading `names` uses, transitively."""
        return self.old.closure(names)

    def running_statements(self) -> tuple[ast.stmt, ast.stmt]:
        """The statement of the body (or of its loop's) the point is at: the run's, the edited one."""
        old, new = self.old.body[self.point.index], self.new.body[self.index]
        if self.loop is not None and self.point.body not in (None, Point.NEXT):
            assert isinstance(old, ast.For | ast.While) and self.point.body is not None
            return old.body[self.point.body], self.loop.body[self.point.body]
        return old, new

    def _outer(self) -> tuple[Block, dict[str, str]] | None:
        """The script's module block and its restored globals, for a frame of a function of the
        script (None for the module frame itself and for a user module's function)."""
        return None

    def vouch_rerun(self) -> None:
        """The statement at the point had started before the stop and runs again from its
        start: what it reads must be what it read when it first ran. A value restored as it was
        at the stop may have been changed by the part that ran (an array changed in place, a
        list appended to, an attribute set, a global reassigned) unless it cannot change (a
        number, a string) or that part could not reach it: a simple statement stopped in its
        own code (it binds only when it completes; the libraries it calls count as its code),
        or in a function of the user's it calls, which reached only what was passed to the
        calls that ran. Else a forceable refusal naming the value and the line."""
        if not self.point.started or self.point.body == Point.NEXT or self.index >= len(self.new.body):
            return
        old_stmt, new_stmt = self.running_statements()
        compound = any(isinstance(n, ast.stmt) for n in ast.walk(old_stmt) if n is not old_stmt)
        if self.point.started == Point.HERE and not compound:
            return  # a simple statement binds when it completes
        before, at = ran_parts(old_stmt, self.stop_line()) if compound else ([], old_stmt)
        if at is None:
            before = [old_stmt]
        script, ours = self.script(), self.plan.user_packages()
        loads = {n for part in before for n in _given(part, script, ours)}
        changed = {n for part in before for n in _changed(part)}
        if at is not None and self.point.started == Point.BELOW:
            loads |= ran_loads(at, self.called_below(), script, ours, self._below_keeps(ours))
        types = {v.name: v.type for v in self.plan.checkpoint.variables}
        types.update({alias: types.get(target, "") for alias, target in self.plan.checkpoint.aliases.items()})
        frames: list[tuple[Block, dict[str, str]]] = [(self.new, self.restored)]
        outer = self._outer()
        if outer is not None:
            frames.append(outer)
        for block, restored in frames:
            reads = block.closure(loads)
            touched = changed.union(*(block.global_writers.get(n, set()) for n in reads))
            for name in sorted((reads | touched) & set(restored)):
                if name in touched or types.get(restored[name]) not in IMMUTABLE:
                    self._refuse_rerun(new_stmt, name)

    def script(self) -> Module | None:
        """The old script, whose functions' code tells what they change (None for a user module's
        function: its calls count as changing what they are given)."""
        return self.plan.old

    def stop_line(self) -> int | None:
        """The line this frame was at when the checkpoint was taken."""
        stack = self.plan.checkpoint.manifest.get("stack") or []
        top = next((k for k, entry in enumerate(stack) if is_script_module(entry)), None)
        line = stack[top + self.depth].get("line") if top is not None and top + self.depth < len(stack) else None
        return line if isinstance(line, int) else None

    def _below_keeps(self, ours: frozenset[str]) -> bool:
        """Whether the function of a user module this frame was calling changes neither what
        it was given nor a global, by its source as the checkpoint kept it."""
        stack = self.plan.checkpoint.manifest.get("stack") or []
        top = next((k for k, entry in enumerate(stack) if is_script_module(entry)), None)
        if top is None or top + self.depth + 1 >= len(stack):
            return False
        entry = stack[top + self.depth + 1]
        file, name = entry.get("file"), str(entry.get("function", ""))
        sources = self.plan.checkpoint.manifest.get("sources") or {}
        if not file or file not in sources or "." in name:
            return False
        try:
            module = Module(bytes(self.plan.run.store.read_ref(sources[file])), file)
        except (SyntaxError, ValueError, OSError, api.StoreError):
            return False
        function = module.function(name)
        functions = {s.name: s for s in module.body if isinstance(s, ast.FunctionDef)}
        return function is not None and keeps_what_it_is_given(function, module, functions, ours)

    def called_below(self) -> str | None:
        """The name of the function this frame was calling when the checkpoint was taken (a
        method's without its class), from the manifest's stack."""
        stack = self.plan.checkpoint.manifest.get("stack") or []
        top = next((k for k, entry in enumerate(stack) if is_script_module(entry)), None)
        if top is None or top + self.depth + 1 >= len(stack):
            return None
        return str(stack[top + self.depth + 1].get("function", "")).rpartition(".")[2] or None

    def _refuse_rerun(self, stmt: ast.stmt, name: str) -> None:
        where = os.path.relpath(self.filename())
        self.plan.check(f"{where}:{stmt.lineno} (`{describe(stmt)}`) would run again from its start with {name} "
                        "as it was at the stop, which the part of it that ran may have changed already; "
                        "a checkpoint taken before that line would do")

    def filename(self) -> str:
        """The file of the frame's code."""
        return self.plan.run.script

    def _check_edits(self, edited: set[str]) -> None:
        """A definition edited since the run must not have fed a result that is kept."""
        rerun_keys = {statement_key(self.new.body[i]) for i in self.rerun}
        for stmt, facts in zip(self.old.body[: self.point.index], self.old.facts, strict=False):
            if is_definition(stmt) or statement_key(stmt) in rerun_keys:
                continue
            used = edited & self._uses(facts.loads)
            if used:
                name = sorted(used)[0]
                self.plan.check(f"{name} was changed since the run, but line {stmt.lineno} "
                                f"(`{describe(stmt)}`), before the resume point, already ran the old one "
                                "and its result is kept")

    def _check_loop_state(self) -> None:
        """What the loop reads or changes must come back saved: re-running the statements
        before it would give the values from before its first iteration."""
        assert self.loop is not None
        facts = self.old.facts[self.point.index]
        changed = self.old.touches(self.point.index)
        for name in sorted(((facts.loads | changed) & self.needed) - set(self.restored) - target_names(self.loop)):
            if name in self.stale_names:
                if name in changed:
                    k = next(k for k in self.stale if name in self.new.touches(k))
                    self.plan.check(f"the arguments changed, but {_line(self.new, k)} computed {name} from them "
                                    f"and the loop at line {self.loop.lineno} changes it since")
                continue  # re-running it gives its value with the new arguments, which the loop only reads
            computed = [k for k in range(self.index)
                        if name in self.new.touches(k) and not is_definition(self.new.body[k])]
            if computed or name in changed - facts.mutates:  # `np.zeros(…)` changes no value
                self.plan.check(f"{name} is used by the loop at line {self.loop.lineno} but was not saved, "
                                "so its value in the middle of the loop cannot be recreated")


class Plan(Frame):
    """For one checkpoint, the module frame's Frame, and `inner` for main()'s when the point
    is inside it."""

    def __init__(self, checkpoint: api.Checkpoint, old: Module, new: Module, force: bool,
                 args: list[str] | None = None) -> None:
        self.run = checkpoint.run
        self.arguments_changed = args is not None and args != self.run.args
        self.checkpoint = checkpoint
        self.old = old
        self.new = new
        self.force = force
        self.point = locate(old, checkpoint)
        alignment = Alignment(old, new, self.point)
        super().__init__(self, alignment, alignment.edited)
        self.inner: Inner | None = None
        if self.point.function:
            function, inner = self.point.function, self.point.inner
            assert inner is not None
            try:
                self.inner = Inner(self, function, inner, (old, new), alignment.edited)
            except Refusal as refusal:  # running the function again from its start is always right
                hint = " (--force continues inside it anyway)" if refusal.forceable else ""
                self.point = Point(self.point.index, note=f"{self.point.function}() runs again from its start: "
                                   f"{refusal}{hint}", started=Point.BELOW)
        self.passed_over = ""  # why a later checkpoint was not resumed from (set by resume.choose)
        self.callee: Callee | None = None
        self.callee_note = ""  # why the module function main() was calling runs again from its start
        self._go_deeper()
        (self.callee or self.inner or self).vouch_rerun()

    def _go_deeper(self) -> None:
        """Continue inside the user-module function main() (or the top-level statement) was
        calling, where the rules vouch."""
        caller: Frame = self.inner or self
        if self.inner is not None:
            main = self.old.function(self.inner.name)
            assert main is not None
            body, name, depth = main.body, f"{self.inner.name}()", 1
        elif not self.point.function:
            body, name, depth = self.old.body, "the script", 0
        else:
            return
        found = module_call(self.old, body, name, self.checkpoint.manifest.get("stack") or [], depth)
        if found is None:
            return
        call, why = found
        if self.inner is None:  # the note locate made for it is this one's to make
            self.point = Point(self.point.index, self.point.body, started=self.point.started)
        try:
            if why:
                raise Refusal(why, False)
            old_site, new_site = caller.running_statements()
            if statement_key(old_site) != statement_key(new_site):
                self.check(f"line {new_site.lineno} of {name}, which calls it, was changed since "
                           "the run, and its saved locals are those of the old call")
            self.callee = Callee(self, call)
        except Refusal as refusal:
            hint = " (--force continues inside it anyway)" if refusal.forceable else ""
            self.callee_note = f"{call.qualifier}() runs again from its start: {refusal}{hint}"

    def user_packages(self) -> frozenset[str]:
        """The top-level names of the user's own modules: those with a frame on the stack, and
        those beside the script (`pkg/`, `pkg.py`)."""
        stack = self.checkpoint.manifest.get("stack") or []
        found = {str(e["module"]).partition(".")[0] for e in stack if e.get("module")}
        folder = os.path.dirname(self.run.script)
        for name in set(self.new.modules.values()) | set(self.old.modules.values()):
            root = name.partition(".")[0]
            if os.path.exists(os.path.join(folder, root)) or os.path.exists(os.path.join(folder, f"{root}.py")):
                found.add(root)
        return frozenset(found)

    def check(self, message: str) -> None:
        """A forceable refusal, unless --force."""
        if not self.force:
            raise Refusal(message)

    @property
    def ref(self) -> str:
        return self.checkpoint.ref

    def _saved(self) -> tuple[dict[str, str], dict[str, str], set[str]]:
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
        return restored, overlays, set()

    def summary(self) -> list[str]:
        """The `chkpt:` lines saying where it resumes from, what it restored and re-ran."""
        checkpoint = self.checkpoint
        where = (f" at {checkpoint.where}" if checkpoint.outside_script
                 else f" at line {checkpoint.line}" if checkpoint.line else "")
        lines = [self.passed_over] if self.passed_over else []
        lines.append(f"resuming {os.path.basename(self.run.script)} from {self.ref} ({checkpoint.trigger}{where})")
        inner = self.inner
        names = sorted(self.restored) + sorted(self.overlays)
        frames = [f for f in (inner, self.callee) if f is not None]
        for frame in frames:
            names += [f"{frame.name}():{n}" for n in sorted(frame.restored)]
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        lines.append(f"restored {len(names)} value{'s' if len(names) != 1 else ''}"
                     + (f": {shown}" if names else ""))
        # the statements re-run because the arguments changed are listed once, with that reason
        definitions = [i for i in self.rerun if is_definition(self.new.body[i])]
        parts = ([f"{len(definitions)} import/definition statement{'s' if len(definitions) != 1 else ''}"]
                 if definitions else []) + [_line(self.new, i) for i in self.rerun
                                            if i not in definitions and i not in self.stale]
        for frame in frames:
            others = [i for i in frame.rerun if i not in frame.stale]
            if others:
                parts.append(f"in {frame.name}(): " + ", ".join(_line(frame.new, i) for i in others))
        stale = [_line(self.new, i) for i in self.stale if i in self.rerun]
        stale += [f"in {f.name}(): " + ", ".join(_line(f.new, i) for i in f.stale if i in f.rerun)
                  for f in frames if set(f.stale) & set(f.rerun)]
        if parts or not stale:
            lines.append("re-ran " + (", ".join(parts) if parts else "nothing"))
        if stale:
            lines.append("re-ran " + ", ".join(stale) + ": the arguments changed")
        lines += [note for note in (self.point.note, self.callee_note) if note]
        return lines


# The types of saved values that cannot be changed in place (type labels as saved).
IMMUTABLE = {"int", "float", "complex", "bool", "str", "bytes", "NoneType", "range", "numpy.float64",
             "numpy.float32", "numpy.int64", "numpy.int32", "numpy.bool_", "numpy.bool"}


def ran_parts(stmt: ast.stmt, line: int | None) -> tuple[list[ast.AST], ast.stmt | None]:
    """What of compound statement `stmt` had run when it stopped at `line`: its headers and
    the statements before the line (a loop around the line: all of it, for its earlier
    iterations), and the simple statement at the line (None when it cannot be told)."""
    if line is None or not first_line(stmt) <= line <= (stmt.end_lineno or stmt.lineno):
        return [], None
    nested = [getattr(stmt, f) for f in ("body", "handlers", "orelse", "finalbody") if getattr(stmt, f, None)]
    if not nested:
        return [], stmt
    if isinstance(stmt, ast.For | ast.While | ast.AsyncFor):
        return [stmt], None
    before: list[ast.AST] = [n for f in ("test", "items", "subject") for n in _as_list(getattr(stmt, f, None))]
    for body in nested:
        for child in body:
            if (child.end_lineno or child.lineno) < line:
                before.append(child)
            elif first_line(child) <= line:
                inside, at = ran_parts(child, line) if not isinstance(child, ast.ExceptHandler) else ([child], None)
                return before + inside, at
            else:
                return before, None
    return before, None


def _as_list(value: object) -> list[ast.AST]:
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, ast.AST)]


def _changed(node: ast.AST) -> set[str]:
    """Names `node` binds or may change in place (stores through them, methods called on them)."""
    found = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del)}
    for n in ast.walk(node):
        if (isinstance(n, ast.Attribute | ast.Subscript) and isinstance(n.ctx, ast.Store | ast.Del)) \
                or (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
            root = root_name(n.func.value if isinstance(n, ast.Call) else n)  # type: ignore[union-attr]
            found |= {root} if root else set()
    return found


def ran_loads(stmt: ast.stmt, called: str | None, script: Module | None, ours: frozenset[str],
              stopped_keeps: bool = False) -> set[str]:
    """The names the calls of simple statement `stmt` that ran were given (their arguments,
    the object a method was called on) when it stopped in a call of `called`: that call and
    the calls not waiting for it (an enclosing call had not been made yet), except those that
    change nothing they are given (`_given`). Every name it loads when that call is not found once."""
    calls = [n for n in walk_own(stmt) if isinstance(n, ast.Call)]
    stopped = [c for c in calls if (dotted(c.func) or "").rpartition(".")[2] == called]
    if len(stopped) != 1:
        return {n.id for n in walk_own(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    waiting = {id(c) for c in calls if any(n is stopped[0] for n in ast.walk(c)) and c is not stopped[0]}
    if stopped_keeps:  # a function of the user's that changes nothing it is given
        waiting.add(id(stopped[0]))
    return _given(stmt, script, ours, waiting)


def _given(node: ast.AST, script: Module | None, ours: frozenset[str], waiting: set[int] | None = None) -> set[str]:
    """The names given to the calls in `node` (but those in `waiting`) that may change what
    they are given: all calls but those that `keep` (with the functions of `script`, and the
    user's packages `ours`)."""
    functions = {s.name: s for s in script.body if isinstance(s, ast.FunctionDef)} if script else {}
    return {n.id for call in ast.walk(node) if isinstance(call, ast.Call) and id(call) not in (waiting or ())
            and not (script is not None and keeps(call, script, functions, ours))
            for part in (call.func, *call.args, *call.keywords)
            for n in ast.walk(part) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _line(block: Block, index: int) -> str:
    return f"line {block.body[index].lineno} (`{describe(block.body[index])}`)"


class Inner(Frame):
    """main()'s Frame (or that of the module function it was calling: `Callee`): its locals as
    saved, the statements of its body before the point that recompute what was not, and where
    in its body to continue. `name` is what its saved locals are qualified by."""

    def __init__(self, plan: Plan, name: str, point: Point, modules: tuple[Module, Module], edited: set[str],
                 where: str = "the script") -> None:
        self.module_old, self.module_new = modules
        short = name.rpartition(".")[2]
        old, new = self.module_old.function(short), self.module_new.function(short)
        assert old is not None
        if new is None or new.decorator_list:
            raise Refusal(f"{where} no longer has the undecorated top-level function {short}() the "
                          "checkpoint was taken in", False)
        if ast.dump(new.args) != ast.dump(old.args):
            plan.check(f"the parameters of {name}() were changed since the run, but it was called with "
                       "the old ones")
        caller: Frame = plan if plan.inner is None else plan.inner
        if plan.arguments_changed and caller.passes_arguments(short):
            raise Refusal(f"the arguments changed, and {_line(caller.new, caller.index)} called {short}() with "
                          "parameters computed from the old ones", False)
        self.name = name
        self.function = new
        self.old, self.new = Block(old.body, self.module_old.modules), Block(new.body, self.module_new.modules)
        self.point = point
        self.scope = function_locals(new)
        alignment = Alignment(self.old, self.new, self.point)
        super().__init__(plan, alignment, edited | alignment.edited)

    def _saved(self) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """main()'s locals to restore (name → saved name), and those saved only in part (with a
        placeholder for an unsaveable part, or only their parts)."""
        checkpoint = self.plan.checkpoint
        module_names = set().union(*(f.binds for f in self.module_old.facts))
        restored: dict[str, str] = {}
        partial: set[str | None] = set()
        for variable in checkpoint.variables:
            local = self.local_name(variable.name, variable.scope == f"local of {self.name}")
            if local is not None and local.isidentifier():
                restored[local] = variable.name
            elif local is not None:
                partial.add(naming.root_of(local))
        for alias, target in checkpoint.aliases.items():
            local = self.local_name(alias, alias not in module_names)
            if local is not None and local.isidentifier():
                restored.setdefault(local, target)
        partial -= set(restored)
        for skipped in checkpoint.skipped:
            root = naming.root_of(skipped["name"].partition(":")[2] or skipped["name"])
            partial.add(root if root not in module_names else None)
        incomplete = {n for n in partial if n is not None} & self.scope
        return {n: saved for n, saved in restored.items() if n not in incomplete and n in self.scope}, {}, incomplete

    depth = 1

    def _outer(self) -> tuple[Block, dict[str, str]] | None:
        return self.module_new, self.plan.restored

    def local_name(self, saved: str, plain_is_local: bool) -> str | None:
        """The local of main() a saved name is (`x` or `main:x`), else None."""
        qualifier, colon, rest = saved.partition(":")
        if colon:
            return rest if qualifier == self.name else None
        return saved if plain_is_local else None

    def _reads_arguments(self, index: int) -> bool:
        module = self.module_new
        return self.new.reads_arguments(index) or bool(module.closure(self.new.reads(index)) & module.argument_readers)

    def _check_incomplete(self, incomplete: set[str]) -> None:
        for name in sorted(incomplete & self.needed):
            self.plan.check(f"{name} in {self.name}() was saved without a part that cannot be saved, and "
                            "resume rebuilds such objects only at the top level of the script")

    def _uses(self, names: set[str]) -> set[str]:
        return self.module_old.closure(self.old.closure(names))


class Callee(Inner):
    """The Frame of the user-module function main() was calling (`mylib.trainer.fit`), from
    the module's source the checkpoint kept and its source now; `call` says which."""

    def __init__(self, plan: Plan, call: Call) -> None:
        self.call = call
        self.depth = 2 if plan.inner is not None else 1
        where = os.path.relpath(call.file)
        sources = plan.checkpoint.manifest.get("sources", {})
        if call.file not in sources:
            raise Refusal(f"the checkpoint did not keep the source of {where}", False)
        try:
            old = Module(bytes(plan.run.store.read_ref(sources[call.file])), call.file)
        except (SyntaxError, ValueError, api.StoreError) as exc:
            raise Refusal(f"the run's version of {where} cannot be read ({exc})", False) from None
        try:
            with open(call.file, "rb") as handle:
                new = Module(handle.read(), call.file)
        except OSError as exc:
            raise Refusal(f"{where} cannot be read ({exc.strerror})", False) from None
        except (SyntaxError, ValueError) as exc:
            raise Refusal(f"{where} does not compile ({exc})", False) from None
        function = old.function(call.function)
        if function is None or not function.body[0].lineno <= call.line <= (function.end_lineno or function.lineno):
            raise Refusal(f"the source of {where} the checkpoint kept has no top-level function "
                          f"{call.function}() at line {call.line}", False)
        if function.decorator_list:
            raise Refusal("it is decorated", False)
        if any(isinstance(n, ast.Yield | ast.YieldFrom) for n in walk_own(function)):
            raise Refusal("it is a generator", False)
        boundary = plan.checkpoint.manifest.get("boundary") if call.innermost else None
        point = position(function.body, call.line, boundary, False, f"{call.qualifier}()", call.innermost)
        old_defs, new_defs = definitions(old.body), definitions(new.body)
        edited = {n for n in old_defs.keys() | new_defs.keys() if old_defs.get(n) != new_defs.get(n)}
        super().__init__(plan, call.qualifier, point, (old, new), edited, where)

    def _outer(self) -> tuple[Block, dict[str, str]] | None:
        return None  # its module's globals are not restored: it is imported afresh

    def script(self) -> Module | None:
        return None

    def filename(self) -> str:
        return self.call.file
