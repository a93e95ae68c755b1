"""Running a Plan: the prelude untraced and silent, then the rest of the edited script traced.

The rest is compiled from a rewritten AST with the script's own file name, so line numbers,
tracebacks and `__file__` are those of a normal run. A resumed loop reaches chkpt through
the builtin `__chkpt_resume__` (a Resumer), so the script's globals hold nothing of chkpt's.
A point inside main() is reached by a rewritten main(): the top-level statement that called
it runs again and calls that one once (it puts the script's own main() back first); it gets
its saved locals, re-runs (silently) what recomputes the others, and runs its body from the
point on.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import contextlib
import copy
import io
import itertools
import os
import sys

from chkpt import api, fmt, naming, runner, watch
from chkpt import config as config_module
from chkpt.guard import warn
from chkpt.resume.analysis import enumerate_counter, target_names
from chkpt.resume.errors import Refusal
from chkpt.resume.locate import Point, walk_own

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from chkpt.resume.plan import Frame, Inner, Plan

HELPER = "__chkpt_resume__"
CALL_HELPER = "__chkpt_resume_call__"  # the Resumer of the module function main() calls


class Resumer:
    """What the rewritten code asks: the rest of the loop's items, whether it is in the
    partial iteration; in a rewritten main(), the function to put back and its saved locals."""

    def __init__(self, remaining: Iterator[Any] | None, restore: tuple[dict[str, Any], str, Any] | None = None,
                 values: dict[str, Any] | None = None) -> None:
        self._remaining = remaining
        self._partial = True
        # (namespace, name, the function it held): the module's or script's own, and the
        # script's names imported from the module (`from mylib.trainer import fit`)
        self._restore = [restore] if restore is not None else []
        self._values = values or {}

    def also(self, namespace: dict[str, Any], name: str, function: Any) -> None:
        """Put `function` back as `name` in `namespace` too when the rewritten one is entered."""
        self._restore.append((namespace, name, function))

    def enter(self) -> None:
        """The rewritten main() has been called: the script's own is main() again. Its locals
        are about to be put back as they were saved inside it, so, as after a checkpoint taken
        inside main(), its return saves its final ones (the resumed run keeps main()'s result)."""
        for namespace, name, function in self._restore:
            namespace[name] = function
        self._restore = []
        current = watch.current()
        session = current.session() if current is not None else None
        if session is not None:
            session.follow_main(sys._getframe(1))

    def values(self, names: list[str], last: bool = False) -> tuple[Any, ...]:
        """The saved locals `names`; with `last`, chkpt lets go of all of them."""
        found = tuple(self._values[n] for n in names)
        if last:
            self._values = {}
        return found

    @staticmethod
    def quiet() -> contextlib.AbstractContextManager[Any]:
        """Where re-run statements run: their output was seen in the run."""
        return contextlib.redirect_stdout(io.StringIO())

    def rest(self) -> Iterator[Any] | None:
        return self._remaining

    def pending(self) -> bool:
        return self._partial

    def partial(self) -> bool:
        was, self._partial = self._partial, False
        return was


def _helper(method: str, node: ast.AST, helper: str) -> ast.Call:
    call = ast.Call(ast.Attribute(ast.Name(helper, ast.Load()), method, ast.Load()), [], [])
    return ast.copy_location(call, node)


def rewrite_loop(loop: ast.For | ast.While, point: Point, helper: str = HELPER) -> ast.For | ast.While:
    """The loop as it must run from the resume point: the items left, the partial iteration
    (the body from the resume statement on), then whole iterations."""
    loop = copy.deepcopy(loop)
    if isinstance(loop, ast.For):
        loop.iter = _helper("rest", loop.iter, helper)
    if point.body is not None and point.body != Point.NEXT:
        if isinstance(loop, ast.While):
            loop.test = ast.copy_location(ast.BoolOp(ast.Or(), [_helper("pending", loop.test, helper), loop.test]),
                                          loop.test)
        partial = ast.If(_helper("partial", loop.body[0], helper), copy.deepcopy(loop.body[point.body:]), loop.body)
        loop.body = [ast.copy_location(partial, loop.body[0])]
    return ast.fix_missing_locations(loop)


def remaining_items(loop: ast.For, point: Point, globals_: dict[str, Any],
                    locals_: dict[str, Any] | None = None) -> Iterator[Any]:
    """The loop's items from the one to continue with, its iterable evaluated afresh (in
    main()'s saved `locals_` for a loop of main())."""
    filename = globals_["__file__"]
    namespace = {**globals_, **(locals_ or {})}

    def evaluate(node: ast.expr) -> Any:
        expr = ast.Expression(ast.fix_missing_locations(_as_load(node)))
        try:
            return eval(compile(expr, filename, "eval"), globals_, locals_)
        except NameError as exc:
            raise Refusal(f"the loop at line {loop.lineno} reads {exc.name}, which was not saved", False) from None

    iterable = evaluate(loop.iter)
    counter = enumerate_counter(loop)
    if counter is not None:
        call = loop.iter
        assert isinstance(call, ast.Call)
        start = call.args[1] if len(call.args) > 1 else next(
            (k.value for k in call.keywords if k.arg == "start"), None)
        position = namespace[counter] - (evaluate(start) if start is not None else 0)
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


class Values:
    """The checkpoint's values, each loaded once; a part shared by two of them stays shared."""

    def __init__(self, checkpoint: api.Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._parts: dict[str, Any] = {}

    def get(self, saved: str) -> Any:
        return self.checkpoint.part(saved, self._parts)


def future_flags(tree: ast.Module) -> int:
    """The compiler flags of the script's `from __future__ import …` statements."""
    flags = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            for alias in stmt.names:
                flags |= getattr(__future__, alias.name).compiler_flag
    return flags


def run_prelude(plan: Plan, globals_: dict[str, Any], flags: int) -> Values:
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
            warn(fmt.printable(f"could not put {path} back ({type(exc).__name__}: {exc}); it keeps its "
                               "recomputed value"))
    return values


def _located(text: str, at: ast.stmt) -> ast.stmt:
    """The statement `text`, placed at `at`'s lines."""
    stmt = ast.parse(text).body[0]
    for node in ast.walk(stmt):
        if hasattr(node, "lineno"):
            ast.copy_location(node, at)
    return stmt


def _assign(names: list[str], at: ast.stmt, helper: str, last: bool = False) -> ast.stmt:
    return _located(f"({', '.join(names)},) = {helper}.values({names!r}{', last=True' if last else ''})", at)


def resumed_function(inner: Inner, helper: str = HELPER) -> ast.FunctionDef:
    """main() (or the module function it calls) as it must run once: its saved locals back,
    the re-run statements, then its body from the point on (a resumed loop rewritten)."""
    function = copy.deepcopy(inner.function)
    first = function.body[0]
    declared = sorted({n for node in walk_own(function) if isinstance(node, ast.Global) for n in node.names})
    body = [_located(f"global {', '.join(declared)}", first)] if declared else []
    body.append(_located(f"{helper}.enter()", first))
    reruns: list[ast.stmt] = []
    for index in inner.rerun:
        if inner.inputs.get(index):
            reruns.append(_assign(sorted(inner.inputs[index]), first, helper))
        reruns.append(inner.new.body[index])
    if reruns:
        quiet = _located(f"with {helper}.quiet():\n    pass", first)
        assert isinstance(quiet, ast.With)
        quiet.body = reruns
        body.append(quiet)
    body.append(_assign(sorted(inner.restored), first, helper, last=True) if inner.restored
                else _located(f"{helper}.values([], last=True)", first))
    rest = list(inner.new.body[inner.index:])
    if inner.loop is not None:
        rest[0] = rewrite_loop(inner.loop, inner.point, helper)
    function.body = body + rest
    return ast.fix_missing_locations(function)


def where(plan: Plan, globals_: dict[str, Any]) -> str:
    """Where the run continues, with the loop variable's restored value."""
    inner = plan.inner
    if inner is None and plan.callee is not None:
        caller = plan.running_statements()[1]
        return (f"{_where(plan.callee, globals_, f'{plan.callee.name}()', named=True)}, called by line "
                f"{caller.lineno}{_skipped(plan.callee)}")
    if inner is None:
        return _where(plan, globals_, "the script")
    caller = f", called by line {plan.new.body[plan.index].lineno}"
    if plan.callee is not None:
        done = _skipped(plan.callee)
        caller = f", called by {inner.name}(){caller}"
        return f"{_where(plan.callee, globals_, f'{plan.callee.name}()', named=True)}{caller}{done}"
    return f"{_where(inner, globals_, f'{inner.name}()')}{caller}{_skipped(inner)}"


def _skipped(inner: Inner) -> str:
    skipped = [s for i, s in enumerate(inner.new.body[:inner.index]) if i not in inner.rerun]
    return (f"; {len(skipped)} statement{'s' if len(skipped) != 1 else ''} of {inner.name}() before "
            "it skipped") if skipped else ""


def _where(frame: Frame, namespace: dict[str, Any], of: str, named: bool = False) -> str:
    """Where in `frame` it continues; `named` says in which function a loop is."""
    new = frame.new
    if frame.loop is None:
        if frame.index >= len(new.body):
            return f"at the end of {of} (nothing after it to run)"
        return f"continuing at line {new.body[frame.index].lineno}" + (f" in {of}" if of != "the script" else "")
    state = ", ".join(f"{n} = {_short(namespace.get(n))}" for n in sorted(target_names(frame.loop)))
    state = f" ({state})" if state else ""
    in_function = f" in {of}" if named else ""
    if frame.point.body == Point.NEXT:
        return f"continuing the loop at line {frame.loop.lineno}{in_function} after the iteration{state}"
    assert frame.point.body is not None
    return (f"continuing at line {frame.loop.body[frame.point.body].lineno}{in_function}, in the iteration"
            f"{state} of the loop at line {frame.loop.lineno}")


def _prepare_inner(inner: Inner, values: Values, namespace: dict[str, Any], name: str, flags: int,
                   helper: str = HELPER) -> dict[str, Any]:
    """Define the rewritten function as `name` in `namespace` (the script's globals for main(),
    its module's for the function main() calls), with what it asks its Resumer for; returns
    the names it continues with, for the message saying where."""
    locals_ = {local: values.get(saved) for local, saved in inner.restored.items()}
    loop = inner.loop
    remaining = remaining_items(loop, inner.point, namespace, locals_) if isinstance(loop, ast.For) else None
    builtins.__dict__[helper] = Resumer(remaining, (namespace, name, namespace.get(name)), locals_)
    module = ast.Module([resumed_function(inner, helper)], [])
    exec(compile(module, namespace["__file__"], "exec", flags, dont_inherit=True), namespace)
    return {**namespace, **locals_}


def _prepare_callee(plan: Plan, values: Values, script: dict[str, Any]) -> dict[str, Any] | None:
    """Patch the module function main() calls for its first call (it puts the module's own
    back first), in its module and where the script's globals hold it (`from m import f`);
    None, with the note saying why, when its module was not imported by then or its loop
    cannot be continued."""
    assert plan.callee is not None
    call = plan.callee.call
    caller = plan.inner or plan
    module = sys.modules.get(call.module)
    code = getattr(getattr(module, call.function, None), "__code__", None)
    namespace = vars(module) if module is not None else {}
    if (code is None or not isinstance(namespace.get("__file__"), str)
            or os.path.realpath(code.co_filename) != os.path.realpath(call.file)):
        why = f"its module was not imported before {f'{plan.inner.name}()' if plan.inner else 'the call'} ran"
    else:
        try:
            own = namespace[call.function]
            shown = _prepare_inner(plan.callee, values, namespace, call.function,
                                   future_flags(plan.callee.module_new.tree), CALL_HELPER)
            for name, value in list(script.items()):
                if value is own:
                    script[name] = namespace[call.function]
                    builtins.__dict__[CALL_HELPER].also(script, name, own)
            return shown
        except Refusal as refusal:  # its loop cannot be continued: nothing was patched
            why = str(refusal)
    plan.callee = None
    plan.callee_note = f"{call.qualifier}() runs again from its start: {why}"
    caller.vouch_rerun()  # the statement that calls it runs again
    return None


def execute(plan: Plan, path: str, args: list[str], module: str | None = None) -> int:
    """Run the plan as `python path args…` (or `python -m module args…`) would run the
    script, then hand over to the runner (the script's own exit or crash ends the process
    through SystemExit, as under Python)."""
    globals_ = runner.prepare_module(module, args)[1] if module else runner.prepare_script(path, args)
    filename = globals_["__file__"]
    flags = future_flags(plan.new.tree)
    body = list(plan.new.body[plan.index:])
    shown = globals_
    try:
        values = run_prelude(plan, globals_, flags)
        if plan.loop is not None:
            remaining = remaining_items(plan.loop, plan.point, globals_) if isinstance(plan.loop, ast.For) else None
            builtins.__dict__[HELPER] = Resumer(remaining)
            body[0] = rewrite_loop(plan.loop, plan.point)
        elif plan.inner is not None:
            shown = _prepare_inner(plan.inner, values, globals_, plan.inner.name, flags)
        if plan.callee is not None:
            shown = _prepare_callee(plan, values, globals_) or shown
        del values
    except (Refusal, api.NotFound, api.LoadError) as exc:
        hint = " (--force resumes anyway)" if isinstance(exc, Refusal) and exc.forceable else ""
        warn(fmt.printable(f"cannot resume from {plan.ref}: {exc}{hint}"))
        return 2
    except SystemExit:
        raise
    except BaseException as exc:
        warn("re-running the statements before the resume point failed:")
        runner.report_unhandled(exc)
        return 1
    for line in [*plan.summary(), where(plan, shown)]:
        warn(fmt.printable(line))
    del shown  # chkpt keeps no reference to the script's values
    code = compile(ast.Module(body, []), filename, "exec", flags, dont_inherit=True)
    config = config_module.load(os.path.dirname(filename))
    runner.execute(code, globals_, config, {"resumed_from": plan.ref}, ["-m", module, *args] if module else None)
    return 0
