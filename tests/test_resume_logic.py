"""The pure logic of `chkpt resume`, in-process: static facts, lining scripts up, resume
points, plans, and the loop helpers. Checkpoints are built from manifests as dicts; nothing
here starts a process or reads a store (tests/test_resume.py runs the real thing)."""

from __future__ import annotations
import __future__

import ast
import builtins
import textwrap

import pytest

from chkpt import api, records
from chkpt.resume import Refusal, old_module
from chkpt.resume.align import Alignment
from chkpt.resume.analysis import Facts, Module, first_line, is_definition, root_name
from chkpt.resume.execute import Resumer, future_flags, remaining_items, resumed_function, rewrite_loop, where
from chkpt.resume.locate import Point, locate, module_call
from chkpt.resume.plan import Plan
from chkpt.store import Store

SCRIPT = "/work/script.py"
NEXT = Point.NEXT


def source(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def module(text: str) -> Module:
    return Module(source(text), SCRIPT)


def facts(text: str) -> Facts:
    return module(text).facts[0]


def line_of(text: str, fragment: str) -> int:
    """The line number of the first line of `text` that holds `fragment`."""
    lines = source(text).splitlines()
    return next(n for n, line in enumerate(lines, 1) if fragment in line)


# The planning never reads the store: a run of one that does not exist has no checkpoints there.
NO_STORE = Store("/nonexistent/chkpt-store")


def make_run(status: str = "crashed", **meta: object) -> api.Run:
    return api.Run(NO_STORE, {"id": "abcd1234", "script": SCRIPT, "status": status, **meta})


def checkpoint(manifest: dict, run: api.Run | None = None, saved: tuple[str, ...] = (),
               skipped: tuple[str, ...] = (), aliases: dict[str, str] | None = None) -> api.Checkpoint:
    blob = {"hash": "ab" * 16, "size": 1}
    manifest = {"index": 3, "run": "abcd1234", "time": 1.0, "file": SCRIPT, "function": "<module>",
                "frame": "module", **manifest,
                "variables": [{"name": n, "type": "int", "scope": "global", "size": 1, "pickle": blob,
                               "buffers": []} for n in saved],
                "skipped": [{"name": n, "reason": "not saveable"} for n in skipped],
                "aliases": aliases or {}}
    # as a reader gets it: checked, with the optional fields' defaults filled in
    return api.Checkpoint(run or make_run(), records.decode_manifest(records.encode(manifest)))


def crash_at(text: str, fragment: str, **kw: object) -> api.Checkpoint:
    return checkpoint({"trigger": "crash", "line": line_of(text, fragment)}, **kw)  # type: ignore[arg-type]


# -- static facts ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "loads", "binds", "mutates", "deferred"), [
    ("x = y + 1", {"y"}, {"x"}, set(), set()),
    ("import numpy as np", set(), {"np"}, set(), set()),
    ("from os import path as p", set(), {"p"}, set(), set()),
    ("x.attr = value", {"x", "value"}, set(), {"x"}, set()),
    ("table[key] = 1", {"table", "key"}, set(), {"table"}, set()),
    ("del table[key]", {"table", "key"}, set(), {"table"}, set()),
    ("items.append(3)", {"items"}, set(), {"items"}, set()),
    ("model.layers[0].weights.fill(0)", {"model"}, set(), {"model"}, set()),
    ("x += 1", {"x"}, {"x"}, set(), set()),
    ("obj.count += 1", {"obj"}, set(), {"obj"}, set()),
    ("def f(a, b=default):\n    return a + scale + g(b)", {"default"}, {"f"}, set(), {"scale", "g"}),
    ("@register\ndef f():\n    pass", {"register"}, {"f"}, set(), set()),
    ("f = lambda v: v * scale", set(), {"f"}, set(), {"scale"}),
    ("class C:\n    size = base * 2\n    def m(self):\n        return other", {"base"}, {"C"}, set(), {"other"}),
    ("squares = [n * n for n in values if n > limit]", {"values", "limit"}, {"squares"}, set(), set()),
    ("pairs = {k: v for k, v in items}", {"items"}, {"pairs"}, set(), set()),
    ("total = sum(x for x in data)", {"sum", "data"}, {"total"}, set(), set()),
    ("with lock:\n    total = compute(a)", {"lock", "compute", "a"}, {"total"}, set(), set()),
    ("for i in range(n):\n    acc[i] = i", {"range", "n", "acc", "i"}, {"i"}, {"acc"}, set()),
])
def test_facts_of_a_statement(text, loads, binds, mutates, deferred):
    found = facts(text)
    assert (found.loads, found.binds, found.mutates, found.deferred) == (loads, binds, mutates, deferred)


def test_a_function_assigning_a_global_writes_it_and_reads_it_when_called():
    found = facts("def bump():\n    global counter\n    counter += 1\n")
    assert found.global_writes == {"counter"} and "counter" in found.deferred
    assert found.binds == {"bump"} and found.loads == set()


def test_a_statement_reads_what_the_functions_it_calls_read_transitively():
    script = module("""
        def helper():
            return table
        def outer():
            return helper() + offset
        result = outer()
    """)
    assert script.reads(2) == {"outer", "helper", "table", "offset"}
    assert script.closure({"helper"}) == {"helper", "table"}


def test_a_statement_touches_the_globals_its_functions_assign():
    script = module("""
        counter = 0
        def bump():
            global counter
            counter += 1
        bump()
    """)
    assert script.touches(2) == {"counter"}
    assert script.touches(0) == {"counter"} and script.touches(1) == {"bump"}


def test_statement_at_covers_decorators_and_continuation_lines():
    script = module("""
        import functools

        @functools.cache
        def f():
            return 1
        total = (1 +
                 2)
    """)
    assert [script.statement_at(n) for n in range(1, 9)] == [0, None, 1, 1, 1, 2, 2, None]
    assert first_line(script.body[1]) == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("def f(): pass", True), ("class C: pass", True), ("import os", True),
    ("from os import path", True), ("f = lambda: 1", True), ('"""A docstring."""', True),
    ("x = 1", False), ("print('hi')", False), ("x = f(lambda: 1)", False), ("for i in x: pass", False),
])
def test_is_definition(text, expected):
    assert is_definition(ast.parse(text).body[0]) is expected


@pytest.mark.parametrize(("text", "expected"), [("a", "a"), ("a.b[1].c", "a"), ("f().x", None), ("(a or b).c", None)])
def test_root_name(text, expected):
    assert root_name(ast.parse(text, mode="eval").body) == expected


# -- lining the edited script up --------------------------------------------------------------------

OLD = """
    import numpy as np
    def clean(v):
        return v * 2
    raw = np.arange(10)
    data = clean(raw)
    print(data.sum())
    print("done")
"""
POINT = Point(4)  # before `print(data.sum())`


def aligned(new_text: str, point: Point = POINT) -> Alignment:
    return Alignment(module(OLD), module(new_text), point)


def test_the_same_script_lines_up_with_itself():
    alignment = aligned(OLD)
    assert (alignment.index, alignment.problems, alignment.edited) == (4, [], set())


def test_comments_blank_lines_and_edits_after_the_point_are_no_edits():
    alignment = aligned(OLD.replace("raw =", "# the raw data\n\n    raw =")
                        .replace('print("done")', 'print("finished")\n    print(len(data))'))
    assert (alignment.index, alignment.problems, alignment.edited) == (4, [], set())


def test_an_edited_statement_before_the_point_is_a_problem():
    alignment = aligned(OLD.replace("np.arange(10)", "np.arange(20)"))
    assert alignment.problems == ["line 4 (raw = np.arange(20)), before the resume point, was changed "
                                  "since the run (it was: raw = np.arange(10))"]
    assert alignment.index == 4


def test_an_added_statement_before_the_point_is_a_problem_and_moves_the_point():
    alignment = aligned(OLD.replace("data = clean(raw)", "raw = raw + 1\n    data = clean(raw)"))
    assert alignment.problems == ["line 5 (raw = raw + 1) was added before the resume point"]
    assert alignment.index == 5


def test_a_removed_statement_before_the_point_is_a_problem():
    alignment = aligned(OLD.replace("    raw = np.arange(10)\n", ""))
    assert alignment.problems == ["the statement raw = np.arange(10) (line 4 in the run's script), "
                                  "before the resume point, was removed"]
    assert alignment.index == 3


def test_a_moved_definition_is_no_edit():
    moved = OLD.replace("    def clean(v):\n        return v * 2\n", "").replace(
        "data = clean(raw)", "def clean(v):\n        return v * 2\n    data = clean(raw)")
    alignment = aligned(moved)
    assert (alignment.index, alignment.problems, alignment.edited) == (4, [], set())


def test_an_edited_function_is_named_not_a_problem():
    alignment = aligned(OLD.replace("v * 2", "v * 3"))
    assert (alignment.problems, alignment.edited) == ([], {"clean"})


def test_a_definition_added_right_at_the_point_runs_before_it():
    alignment = aligned(OLD.replace("print(data.sum())", "def late():\n        pass\n    print(data.sum())"))
    assert alignment.index == 5 and alignment.problems == []


def test_a_definition_moved_past_a_statement_is_no_edit():
    moved = OLD.replace("    def clean(v):\n        return v * 2\n", "").replace(
        'print("done")', 'print("done")\n    def clean(v):\n        return v * 2')
    alignment = aligned(moved)
    assert alignment.problems == [] and alignment.index == 3
    assert alignment.edited == {"clean"}  # no longer defined before the point


# -- resume points ------------------------------------------------------------------------------------

LOCATED = """
    import chkpt
    import numpy as np
    def work(v):
        return v.sum()
    data = np.arange(10)
    total = work(data)
    for step in range(5):
        data = data + step
        chkpt.snapshot("in the loop")
        print(work(data))
        chkpt.snapshot("last in the body")
    chkpt.snapshot("top")
    if total:
        chkpt.snapshot("in a block")
    while data.sum() > 0:
        data = data - 1
    print(total,
          data)
"""


def at(fragment: str) -> int:
    return line_of(LOCATED, fragment)


def in_work(caller: str) -> dict:
    """The manifest of a crash inside work(), called from the line holding `caller`."""
    return {"trigger": "crash", "function": "work", "frame": "function", "line": at("return v.sum()"),
            "stack": [{"function": "<module>", "line": at(caller)}, {"function": "work", "line": at("v.sum()")}]}


@pytest.mark.parametrize(("manifest", "point"), [
    ({"trigger": "periodic", "line": at("total = work"), "boundary": "statement"}, Point(4)),
    ({"trigger": "periodic", "line": at("for step"), "boundary": "loop"}, Point(5, NEXT)),
    ({"trigger": "periodic", "line": at("while data"), "boundary": "loop"}, Point(8, NEXT)),
    ({"trigger": "crash", "line": at("total = work")}, Point(4)),
    ({"trigger": "crash", "line": at("print(total") + 1}, Point(9)),
    ({"trigger": "crash", "line": at("data = data + step")}, Point(5, 0)),
    ({"trigger": "signal", "line": at("print(work(data))")}, Point(5, 2)),
    ({"trigger": "crash", "line": at("while data")}, Point(8, NEXT)),
    ({"trigger": "crash", "line": at("data = data - 1")}, Point(8, 0)),
    (in_work("total = work"), Point(4, function="work", inner=Point(0))),
    (in_work("print(work(data))"), Point(5, 2)),
    ({"trigger": "explicit", "line": at('"top"')}, Point(7)),
    ({"trigger": "explicit", "line": at('"in the loop"')}, Point(5, 2)),
    ({"trigger": "explicit", "line": at('"last in the body"')}, Point(5, NEXT)),
    ({"trigger": "periodic", "frame": "function", "function": "work", "line": 4,
      "stack": [{"function": "<module>", "line": at("total = work")}, {"function": "work", "line": 4}]},
     Point(4, function="work", inner=Point(0))),
])
def test_locate(manifest, point):
    assert locate(module(LOCATED), checkpoint(manifest)) == point


def test_the_exit_of_a_finished_run_resumes_at_the_end():
    old = module(LOCATED)
    assert locate(old, checkpoint({"trigger": "exit", "line": None}, make_run("finished"))) == Point(len(old.body))


@pytest.mark.parametrize(("manifest", "run", "fragment"), [
    ({"trigger": "exit"}, make_run("crashed"), "exit checkpoint was not taken at the end"),
    ({"trigger": "crash", "file": "/work/lib.py", "line": 3}, None, "taken in /work/lib.py"),
    ({"trigger": "crash", "label": "thread Worker-1", "line": at("total")}, None, "when a thread crashed"),
    ({"trigger": "crash", "function": "work", "frame": "function", "line": 4}, None,
     "does not record which top-level statement"),
    ({"trigger": "crash", "function": "work", "frame": "function", "line": 4,
      "stack": [{"function": "work", "line": 4}]}, None, "does not record which top-level statement"),
    ({"trigger": "crash", "line": None}, None, "does not record"),
    ({"trigger": "crash", "line": 99}, None, "line 99 is not inside a top-level statement"),
    ({"trigger": "crash", "line": at("for step")}, None, "fetched its next item"),
    ({"trigger": "explicit", "line": at('"in a block"')}, None, "inside a block"),
])
def test_locate_refuses(manifest, run, fragment):
    with pytest.raises(Refusal, match=fragment) as refused:
        locate(module(LOCATED), checkpoint(manifest, run))
    assert not refused.value.forceable


# -- plans ------------------------------------------------------------------------------------------

PIPELINE = """
    import threading
    import numpy as np
    def clean(v):
        return v[v % 7 != 0]
    raw = np.arange(100)
    lock = threading.Lock()
    data = clean(raw)
    stats = {"n": len(data)}
    with lock:
        report = stats["n"] / len(dta)
    print(report)
"""
FIXED = PIPELINE.replace("len(dta)", "len(data)")


def pipeline_plan(new_text: str = FIXED, force: bool = False) -> Plan:
    crash = crash_at(PIPELINE, "len(dta)", saved=("raw", "data", "stats"), skipped=("lock",))
    return Plan(crash, module(PIPELINE), module(new_text), force)


def test_a_plan_restores_what_was_saved_and_recomputes_what_was_not():
    plan = pipeline_plan()
    assert (plan.point, plan.index, plan.loop) == (Point(7), 7, None)
    assert plan.restored == {"raw": "raw", "data": "data", "stats": "stats"} and plan.overlays == {}
    assert plan.rerun == [0, 1, 2, 4] and plan.inputs == {}
    assert plan.summary() == [
        "resuming script.py from abcd1234@3 (crash at line 10)",
        "restored 3 values: data, raw, stats",
        "re-ran 3 import/definition statements, line 6 (`lock = threading.Lock()`)",
    ]
    assert where(plan, {}) == "continuing at line 9"


def test_an_edited_function_that_fed_a_kept_result_is_refused_unless_forced():
    edited = FIXED.replace("% 7", "% 5")
    with pytest.raises(Refusal, match=r"clean was changed since the run, but line 7 \(`data = clean\(raw\)`\)"):
        pipeline_plan(edited)
    assert pipeline_plan(edited, force=True).rerun == [0, 1, 2, 4]


def test_an_edited_function_used_only_from_the_point_on_is_fine():
    script = """
        def summarize(v):
            return v.summ()
        values = [1, 2]
        summary = summarize(values)
    """
    fixed = script.replace("summ()", "sum()").replace("v.sum()", "v.sum() / 2")
    plan = Plan(crash_at(script, "summary =", saved=("values",)), module(script), module(fixed), False)
    assert plan.index == 2 and plan.rerun == [0]


def test_an_edited_statement_before_the_point_is_refused_unless_forced():
    edited = FIXED.replace("np.arange(100)", "np.arange(50)")
    with pytest.raises(Refusal, match=r"line 5 .* was changed since the run") as refused:
        pipeline_plan(edited)
    assert refused.value.forceable
    assert pipeline_plan(edited, force=True).index == 7


def test_a_rerun_statement_reads_a_restored_value_only_if_nothing_changed_it_since():
    script = """
        import numpy as np
        base = np.arange(10)
        gen = iter(base)
        print(next(gen))
    """
    plan = Plan(crash_at(script, "print", saved=("base",), skipped=("gen",)), module(script), module(script), False)
    assert plan.rerun == [0, 2] and plan.inputs == {2: {"base"}}
    changed = script.replace("gen = iter(base)", "gen = iter(base)\n        base = base * 2")
    plan = Plan(crash_at(changed, "print", saved=("base",), skipped=("gen",)), module(changed), module(changed), False)
    assert plan.rerun == [0, 1, 2] and plan.inputs == {}  # `iter` must see base before `* 2`


def test_an_object_with_an_unsaveable_part_is_rebuilt_then_given_its_saved_parts():
    script = """
        import threading
        import numpy as np
        lock = threading.Lock()
        weights = np.zeros(3)
        parts = {"weights": weights, "guard": lock}
        print(parts["weights"].sum() / 0)
    """
    crash = crash_at(script, "print", saved=("weights",), skipped=("lock", "parts['guard']"),
                     aliases={"parts['weights']": "weights"})
    plan = Plan(crash, module(script), module(script), False)
    assert plan.restored == {"weights": "weights"} and plan.overlays == {"parts['weights']": "weights"}
    assert plan.rerun == [0, 1, 2, 4] and plan.inputs == {4: {"weights"}}


@pytest.mark.parametrize(("text", "reads"), [
    ("import sys\nn = int(sys.argv[1])", True),
    ("import sys as system\nn = len(system.argv)", True),
    ("from sys import argv as av\nn = av[1:]", True),
    ("import argparse\nargs = parser.parse_args()", True),
    ("import argparse\nargs, rest = p.parse_known_args(['-x'])", True),
    ("import getopt\nopts = getopt.getopt(a, 'x')", True),
    ("import sys\ndef parse():\n    return sys.argv[1]\nn = parse()", True),
    ("import sys\nsys.path.append(here)", False),
    ("import os\nargv = os.environ", False),
])
def test_a_statement_reads_the_program_arguments(text, reads):
    script = module(text)
    assert script.reads_arguments(len(script.body) - 1) is reads


TOP = """
    import sys
    import numpy as np
    n = int(sys.argv[1])
    data = np.arange(n)
    other = np.ones(3)
    print(data.sum() / 0, other)
"""


def test_values_computed_from_changed_arguments_are_recomputed_not_restored():
    crash = crash_at(TOP, "print", saved=("n", "data", "other"))
    for same in (None, []):
        plan = Plan(crash, module(TOP), module(TOP), False, same)
        assert set(plan.restored) == {"n", "data", "other"} and plan.rerun == [0, 1]
    plan = Plan(crash, module(TOP), module(TOP), False, ["7"])
    assert set(plan.restored) == {"other"} and plan.rerun == [0, 1, 2, 3]
    assert plan.summary()[-1] == ("re-ran line 3 (`n = int(sys.argv[1])`), line 4 (`data = np.arange(n)`): "
                                  "the arguments changed")
    assert plan.summary()[-2] == "re-ran 2 import/definition statements"  # each statement said once


@pytest.mark.parametrize(("text", "mutated"), [
    ("import pandas as pd\nframes = pd.concat(parts)", set()),
    ("import numpy as np\nz = np.zeros(3) + np.linalg.norm(v)", set()),
    ("import os.path\np = os.path.join(a, b)", set()),
    ("import numpy as np\nnp.random.seed(0)", {"np"}),
    ("import numpy as np\nx = np.random.rand(3)", {"np"}),
    ("import numpy as np\nrng = np.random.default_rng(0)", set()),
    ("import random\nk = random.randint(0, 9)", {"random"}),
    ("import torch\ng = torch.manual_seed(0)", {"torch"}),
    ("import sys\nsys.path.append(here)", {"sys"}),
    ("import matplotlib.pyplot as plt\nplt.plot(x)", {"plt"}),
    ("from pandas import concat\nframes = concat(parts)", set()),
    ("frames = pd.concat(parts)", {"pd"}),  # not imported by the script: any object's method
])
def test_a_module_function_changes_its_module_only_if_stateful_or_called_for_its_effect(text, mutated):
    assert module(text).facts[1 if "\n" in text else 0].mutates == mutated


def test_a_saved_value_built_with_module_functions_is_not_rerun_but_the_random_state_is():
    script = """
        import numpy as np
        import pandas as pd
        def slow_load():
            return {"a": [1, 2, 3]}
        np.random.seed(0)
        df = pd.DataFrame(slow_load())
        noise = np.random.rand(3)
        both = pd.concat([df, df])
        print(both.shape, noise, np.random.rand(2) / zero)
    """
    plan = Plan(crash_at(script, "print", saved=("df", "noise", "both")), module(script), module(script), False)
    # the draws before the point run again, so the draws after it are those of a full run
    assert plan.rerun == [0, 1, 2, 3, 5] and plan.restored == {"df": "df", "noise": "noise", "both": "both"}


TRAINING = """
    import numpy as np
    weights = np.zeros(5)
    history = []
    for epoch in range(10):
        weights += 0.1
        history.append(float(weights.sum()))
        if epoch == 5:
            lr = learnin_rate
    print(history)
"""
TRAINED = TRAINING.replace("learnin_rate", "0.1")


def training_plan(new_text: str = TRAINED, saved: tuple[str, ...] = ("weights", "history", "epoch"),
                  force: bool = False) -> Plan:
    crash = crash_at(TRAINING, "learnin_rate", saved=saved)
    return Plan(crash, module(TRAINING), module(new_text), force)


def test_a_crash_in_a_loop_continues_in_that_iteration():
    plan = training_plan()
    assert plan.point == Point(3, 2) and isinstance(plan.loop, ast.For) and plan.rerun == [0]
    assert where(plan, {"epoch": 5}) == "continuing at line 7, in the iteration (epoch = 5) of the loop at line 4"


@pytest.mark.parametrize(("new_text", "saved", "fragment", "forceable"), [
    (TRAINED.replace("range(10)", "range(5)"), ("weights", "history", "epoch"),
     "no longer has the loop `for epoch in range.10.:` .line 4 of the run.s script", False),
    (TRAINED.replace("+= 0.1", "+= 0.2"), ("weights", "history", "epoch"),
     "loop body above line 7 already ran", True),
    (TRAINED, ("weights", "history"), "loop variable epoch was not saved", False),
    (TRAINED, ("weights", "epoch"), "history is used by the loop at line 4 but was not saved", True),
])
def test_a_loop_plan_refuses(new_text, saved, fragment, forceable):
    with pytest.raises(Refusal, match=fragment) as refused:
        training_plan(new_text, saved)
    assert refused.value.forceable is forceable
    if forceable:
        assert training_plan(new_text, saved, force=True).loop is not None


def test_definitions_a_loop_reads_are_rerun_not_refused():
    script = """
        import numpy as np
        def scaled(k):
            return np.float64(k) * 2
        out = []
        for k in range(4):
            out.append(scaled(k) / (k - 2))
    """
    plan = Plan(crash_at(script, "out.append", saved=("out", "k")), module(script), module(script), False)
    assert (plan.point, plan.rerun) == (Point(3, 0), [0, 1])


def test_the_exit_of_a_finished_run_runs_only_the_added_lines():
    script = "import numpy as np\nx = np.arange(10.0)\n"
    done = checkpoint({"trigger": "exit", "line": None}, make_run("finished"), saved=("x",))
    plan = Plan(done, Module(script, SCRIPT), Module(script + "print(x.mean())\n", SCRIPT), False)
    assert (plan.index, plan.rerun, plan.restored) == (2, [0], {"x": "x"})
    assert where(plan, {}) == "continuing at line 3"
    nothing = Plan(done, Module(script, SCRIPT), Module(script, SCRIPT), False)
    assert where(nothing, {}) == "at the end of the script (nothing after it to run)"


@pytest.mark.parametrize(("meta", "fragment"), [
    ({"argv": ["-m", "pkg.main"], "source": {"hash": "0" * 32}}, "python -m"),
    ({"argv": ["script.py"]}, "did not keep its script's source"),
])
def test_a_run_without_its_script_cannot_be_resumed(meta, fragment):
    with pytest.raises(Refusal, match=fragment):
        old_module(make_run(**meta))


# -- inside main() -----------------------------------------------------------------------------------

MAINLY = """
    import threading
    import numpy as np
    def helper(v):
        return v.sum()
    def main(n):
        data = np.arange(n)
        lock = threading.Lock()
        print("loaded")
        for epoch in range(5):
            data = data + epoch
            print(helper(data))
        with lock:
            return data
    if __name__ == "__main__":
        result = main(10)
"""


def main_at(fragment: str, trigger: str = "crash", boundary: str | None = None, deeper: bool = False,
            saved: tuple[str, ...] = ("data", "epoch", "n"), skipped: tuple[str, ...] = ("lock",)) -> api.Checkpoint:
    """A checkpoint in main() (in helper() with `deeper`) of MAINLY or a script with its lines."""
    stack = [{"function": "<module>", "line": line_of(MAINLY, "result = main")},
             {"function": "main", "line": line_of(MAINLY, fragment)}]
    if deeper:
        stack.append({"function": "helper", "line": line_of(MAINLY, "return v.sum()")})
    manifest = {"trigger": trigger, "frame": "function", "function": stack[-1]["function"],
                "line": stack[-1]["line"], "boundary": boundary, "stack": stack}
    made = checkpoint(manifest, skipped=skipped)
    blob = {"hash": "ab" * 16, "size": 1}
    made.manifest["variables"] = [{"name": n, "type": "int", "scope": "local of main", "size": 1, "pickle": blob,
                                   "buffers": []} for n in saved]
    return api.Checkpoint(made.run, records.decode_manifest(records.encode(made.manifest)))


@pytest.mark.parametrize(("where", "point"), [
    (dict(fragment="print(\"loaded", trigger="periodic", boundary="statement"), Point(2)),
    (dict(fragment="for epoch", trigger="periodic", boundary="loop"), Point(3, NEXT)),
    (dict(fragment="data = data + epoch", trigger="signal"), Point(3, 0)),
    (dict(fragment="print(helper", deeper=True), Point(3, 1)),
    (dict(fragment="lock = threading"), Point(1)),
])
def test_locate_inside_main(where, point):
    assert locate(module(MAINLY), main_at(**where)) == Point(4, function="main", inner=point)


def test_locate_inside_main_under_the_if_block_and_its_refusals():
    shaped = MAINLY.replace("        result = main(10)", "        print(main(10), main(2))")
    found = locate(module(shaped), main_at("for epoch"))
    assert found.function is None and "calls it more than once" in found.note
    looped = MAINLY.replace('if __name__ == "__main__":', "for k in range(2):")
    found = locate(module(looped), main_at("for epoch"))
    assert found.function is None and "it is called inside a `for` statement" in found.note
    with pytest.raises(Refusal, match="fetched its next item"):
        locate(module(MAINLY), main_at("for epoch"))  # a crash at the header: not between iterations


def test_a_plan_inside_main_restores_its_locals_and_reruns_what_was_not_saved():
    fixed = MAINLY.replace("print(helper(data))", "print(helper(data) / 2)")
    plan = Plan(main_at("print(helper"), module(MAINLY), module(fixed), False)
    inner = plan.inner
    assert inner is not None and (inner.index, inner.point, isinstance(inner.loop, ast.For)) == (3, Point(3, 1), True)
    assert inner.restored == {"data": "data", "epoch": "epoch", "n": "n"}
    assert inner.rerun == [1]  # the lock, which was not saved; `data = np.arange(n)` is not run again
    assert plan.rerun == [0, 1, 2, 3] and plan.index == 4
    assert plan.summary()[1:] == ["restored 3 values: main():data, main():epoch, main():n",
                                  "re-ran 4 import/definition statements, in main(): line 7 "
                                  "(`lock = threading.Lock()`)"]
    assert where(plan, {"epoch": 3}) == ("continuing at line 11, in the iteration (epoch = 3) of the loop at "
                                         "line 9, called by line 14; 2 statements of main() before it skipped")


def test_main_edited_above_the_point_runs_again_from_its_start_unless_forced():
    edited = MAINLY.replace("np.arange(n)", "np.arange(n) * 2")
    plan = Plan(main_at("print(helper"), module(MAINLY), module(edited), False)
    assert plan.inner is None and plan.point == Point(4)
    assert plan.summary()[-1].startswith("main() runs again from its start: line 6 (data = np.arange(n) * 2), "
                                         "before the resume point, was changed")
    assert Plan(main_at("print(helper"), module(MAINLY), module(edited), True).inner is not None
    unsaved = Plan(main_at("print(helper", saved=("data", "n")), module(MAINLY), module(MAINLY), False)
    assert unsaved.inner is None and "the loop variable epoch was not saved" in unsaved.summary()[-1]


ARGUED = MAINLY.replace("import threading", "import threading, sys").replace(
    'print("loaded")', "k = len(sys.argv)").replace("print(helper(data))", "print(helper(data), k)")


def test_inside_main_a_local_computed_from_changed_arguments_is_recomputed():
    at = main_at("print(helper", saved=("data", "epoch", "n", "k"))
    same = Plan(at, module(ARGUED), module(ARGUED), False, [])
    assert same.inner is not None and "k" in same.inner.restored and same.inner.rerun == [1]
    plan = Plan(at, module(ARGUED), module(ARGUED), False, ["--new"])
    assert plan.inner is not None and "k" not in plan.inner.restored and plan.inner.rerun == [1, 2]
    assert plan.summary()[-1] == "re-ran in main(): line 8 (`k = len(sys.argv)`): the arguments changed"


def test_main_called_with_parameters_from_changed_arguments_runs_again_from_its_start():
    script = ARGUED.replace("result = main(10)", "result = main(9 + len(sys.argv))")
    at = main_at("print(helper", saved=("data", "epoch", "n", "k"))
    assert Plan(at, module(script), module(script), False).inner is not None
    plan = Plan(at, module(script), module(script), False, ["--new"])
    assert plan.inner is None and plan.summary()[-1] == (
        "main() runs again from its start: the arguments changed, and line 14 (`if __name__ == '__main__':`) "
        "called main() with parameters computed from the old ones")


def test_a_loop_changing_a_value_computed_from_changed_arguments_is_refused_unless_forced():
    script = ARGUED.replace("data = np.arange(n)", "data = np.arange(len(sys.argv))")
    at = main_at("print(helper", saved=("data", "epoch", "n", "k"))
    plan = Plan(at, module(script), module(script), False, ["--new"])
    assert plan.inner is None and "the arguments changed, but line 6 (`data = np.arange(len(sys.argv))`) " \
        "computed data from them and the loop at line 9 changes it since" in plan.summary()[-1]


def test_the_rewritten_main_puts_itself_back_restores_reruns_quietly_and_continues(capsys):
    plan = Plan(main_at("print(helper"), module(MAINLY), module(MAINLY), False)
    assert plan.inner is not None
    text = ast.unparse(resumed_function(plan.inner))
    assert text.splitlines() == [
        "def main(n):",
        "    __chkpt_resume__.enter()",
        "    with __chkpt_resume__.quiet():",
        "        lock = threading.Lock()",
        "    data, epoch, n = __chkpt_resume__.values(['data', 'epoch', 'n'], last=True)",
        *textwrap.indent(ast.unparse(rewrite_loop(plan.inner.loop, plan.inner.point)), "    ").splitlines(),
        "    with lock:",
        "        return data",
    ]


# -- running the loop from the point ----------------------------------------------------------------

def loop(text: str) -> ast.For:
    node = ast.parse(text).body[0]
    assert isinstance(node, ast.For)
    return node


@pytest.mark.parametrize(("header", "state", "point", "items"), [
    ("for i in range(10): pass", {"i": 7}, Point(0, 0), [7, 8, 9]),
    ("for i in range(10): pass", {"i": 7}, Point(0, NEXT), [8, 9]),
    ("for i in range(2, 20, 4): pass", {"i": 10}, Point(0, 0), [10, 14, 18]),
    ("for n, w in enumerate(words, 1): pass", {"n": 2, "words": ["a", "b", "c"]}, Point(0, 0), [(2, "b"), (3, "c")]),
    ("for n, w in enumerate(words, start=1): pass", {"n": 2, "words": "abc"}, Point(0, NEXT), [(3, "c")]),
    ("for w in words: pass", {"w": "green", "words": ["red", "green", "blue"]}, Point(0, 0), ["green", "blue"]),
    ("for k in table: pass", {"k": "b", "table": {"a": 1, "b": 2}}, Point(0, NEXT), []),
])
def test_remaining_items(header, state, point, items):
    assert list(remaining_items(loop(header), point, {"__file__": SCRIPT, **state})) == items


@pytest.mark.parametrize(("header", "state", "fragment"), [
    ("for i in range(5): pass", {"i": 7}, "7 is no longer an item"),
    ("for n in gen: pass", {"n": 1, "gen": iter([1, 2])}, "iterates over a list_iterator"),
    ("for w in words: pass", {"w": "a", "words": ["a", "b", "a"]}, "occurs 2 times"),
    ("for w in words: pass", {"w": "z", "words": ["a", "b"]}, "'z' is not in the items"),
])
def test_remaining_items_refuses(header, state, fragment):
    with pytest.raises(Refusal, match=fragment):
        remaining_items(loop(header), Point(0, 0), {"__file__": SCRIPT, **state})


@pytest.mark.parametrize(("code", "point", "remaining", "out"), [
    ("for i in range(4):\n    out.append(('a', i))\n    out.append(('b', i))\n", Point(0, 1), range(2, 4),
     [("b", 2), ("a", 3), ("b", 3)]),
    ("for i in range(4):\n    out.append(i)\n", Point(0, NEXT), range(3, 4), [3]),
    ("i = 2\nwhile i < 4:\n    out.append(('a', i))\n    i += 1\n    out.append(('b', i))\n", Point(1, 2), None,
     [("b", 2), ("a", 2), ("b", 3), ("a", 3), ("b", 4)]),
    ("for i in range(9):\n    if i == 3:\n        break\n    out.append(i)\nelse:\n    out.append('else')\n",
     Point(0, 0), range(2, 9), [2]),
])
def test_a_rewritten_loop_runs_the_partial_iteration_then_whole_ones(code, point, remaining, out, monkeypatch):
    tree = ast.parse(code)
    loop_node = tree.body[point.index]
    assert isinstance(loop_node, ast.For | ast.While)
    tree.body[point.index] = rewrite_loop(loop_node, point)
    monkeypatch.setattr(builtins, "__chkpt_resume__",
                        Resumer(iter(remaining) if remaining is not None else None), raising=False)
    namespace: dict = {"out": []}
    exec(compile(tree, SCRIPT, "exec"), namespace)
    assert namespace["out"] == out


def test_future_flags():
    flags = future_flags(ast.parse("from __future__ import annotations\nx = 1\n"))
    assert flags == __future__.annotations.compiler_flag
    assert future_flags(ast.parse("x = 1\n")) == 0


CALLS_A_MODULE = """
    import mylib.trainer
    from mylib import trainer as tr
    from mylib.trainer import fit

    def main(X):
        w = mylib.trainer.fit(X, 40)
        v = tr.fit(X, 40) + 1
        for epoch in range(3):
            tr.fit(X, epoch)
        u = fit(X, 40)
        z = tr.fit(tr.fit(X, 1), 2)
        mylib.trainer.Trainer().fit(X)
"""


def stack_into(caller: str, function: str = "fit") -> list[dict]:
    """The stack of a checkpoint taken in mylib.trainer's `function`, called by main() at `caller`."""
    return [{"function": "<module>", "line": 20}, {"function": "main", "line": line_of(CALLS_A_MODULE, caller)},
            {"function": function, "line": 9, "file": "/work/mylib/trainer.py", "module": "mylib.trainer"}]


@pytest.mark.parametrize(("caller", "function", "why"), [
    ("w = mylib.trainer.fit", "fit", ""),
    ("v = tr.fit", "fit", ""),  # through an import alias, inside an expression
    ("tr.fit(X, epoch)", "fit", ""),  # in a loop of main()
    ("u = fit(X", "fit", ""),  # through a name imported from its module
    ("z = tr.fit", "fit", "calls it more than once"),
    ("for epoch", "fit", "is not a statement that calls it"),
    ("Trainer().fit", "Trainer.fit", "not a top-level function of its module"),
])
def test_which_module_function_main_was_calling(caller, function, why):
    script = module(CALLS_A_MODULE)
    main = script.function("main")
    found = module_call(script, main.body, "main()", stack_into(caller, function))
    assert found is not None
    call, said = found
    assert (call.qualifier, call.line, call.innermost) == (f"mylib.trainer.{function}", 9, True)
    assert why in said and bool(said) == bool(why)


def test_a_checkpoint_in_main_itself_or_in_a_script_function_goes_no_deeper():
    script = module(CALLS_A_MODULE)
    main = script.function("main")
    stack = stack_into("w = mylib.trainer.fit")
    assert module_call(script, main.body, "main()", stack[:2]) is None
    assert module_call(script, main.body, "main()", [*stack[:2], {"function": "helper", "line": 3}]) is None
    note = {"function": "note", "line": 2, "file": "/x.py", "module": "x"}
    below = module_call(script, main.body, "main()", [*stack, note])
    assert below is not None and not below[0].innermost  # fit's point is then the statement calling note
