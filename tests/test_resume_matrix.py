"""Resume is right or it refuses: the matrix of call form x stop x mutation x edit.

A statement that had started when the run stopped (a crash, SIGTERM, or a checkpoint taken
inside a function it called) runs again from its start on the values restored as they were
at the stop. When the part of it that ran may have changed one of them, resume must refuse
(forceably), naming the value and the line; else a resumed run would apply that work twice.
The matrix is planned in-process from manifests (nothing runs); a few dozen end-to-end runs
at the bottom compare a resumed run with a fresh `CHKPT=0` run of the edited script byte for
byte, or assert the refusal.
"""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from chkpt import api, records
from chkpt.resume import Refusal
from chkpt.resume.analysis import Module, keeps_what_it_is_given
from chkpt.resume.plan import Plan
from chkpt.store import Store
from conftest import CHKPT, PYTHON, run, write

SCRIPT = "/work/train.py"
PACKAGE = "/work/pkg/tr.py"
NO_STORE = Store("/nonexistent/chkpt-store")

# what the function the call runs does to `w`, and the type `w` is saved as
MUTATIONS = {
    "numpy in place": ("w += 1", "numpy.ndarray"),
    "list append": ("w.append(i)", "list"),
    "dict update": ("w.update({i: i})", "dict"),
    "attribute": ("w.count = i", "pkg.tr.State"),
}

# call forms: the script (its `CALL` line is where it stops), and the stack below the
# frame that runs the call (`function` entries: the script's own have no file)
FORMS = {
    "from-import, top level": ("""
        from pkg.tr import train
        w = make()
        train(w, 10)  # CALL
        print(w)
        """, [("train", PACKAGE)]),
    "through its module, top level": ("""
        import pkg.tr
        w = make()
        pkg.tr.train(w, 10)  # CALL
        print(w)
        """, [("train", PACKAGE)]),
    "method, top level": ("""
        from pkg.tr import Trainer
        trainer = Trainer()
        w = make()
        trainer.train(w, 10)  # CALL
        print(w)
        """, [("Trainer.train", PACKAGE)]),
    "from-import, in main()": ("""
        from pkg.tr import train
        def main():
            w = make()
            train(w, 10)  # CALL
            print(w)
        main()  # MAIN
        """, [("main", None), ("train", PACKAGE)]),
    "script function, top level": ("""
        def train(w, n):
            for i in range(n):
                MUTATION
        w = make()
        train(w, 10)  # CALL
        print(w)
        """, [("train", None)]),
    "script function, in main()": ("""
        def train(w, n):
            for i in range(n):
                MUTATION
        def main():
            w = make()
            train(w, 10)  # CALL
            print(w)
        if __name__ == "__main__":
            main()  # MAIN
        """, [("main", None), ("train", None)]),
    "nested: main() → helper() → package": ("""
        from pkg.tr import train
        def helper(w):
            return train(w, 10)
        def main():
            w = make()
            helper(w)  # CALL
            print(w)
        main()  # MAIN
        """, [("main", None), ("helper", None), ("train", PACKAGE)]),
    "in a loop of main()": ("""
        from pkg.tr import train
        def main():
            w = make()
            for epoch in range(3):
                train(w, 10)  # CALL
            print(w)
        main()  # MAIN
        """, [("main", None), ("train", PACKAGE)]),
}

STOPS = {"crash": "crash", "SIGTERM": "signal", "periodic inside the function": "periodic"}
EDITS = {"none": None, "below the point": ("print(w)", "print(repr(w))"),
         "above the point": ("w = make()", "w = make(1)")}


def script(form: str, mutation: str) -> str:
    text = textwrap.dedent(FORMS[form][0]).lstrip("\n")
    return text.replace("MUTATION", MUTATIONS[mutation][0])


def line_of(text: str, marker: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if marker in line)


def manifest(text: str, form: str, trigger: str, mutation: str) -> dict:
    """Where a run of `text` stopped: inside the function the CALL line calls."""
    below = FORMS[form][1]
    call = line_of(text, "# CALL")
    stack = [{"function": "<module>", "line": line_of(text, "# MAIN") if below[0][0] == "main" else call}]
    for function, file in below:
        if function == "main":
            line = call
        elif file is not None:
            line = 5  # a line of the package's function
        else:
            line = line_of(text, "return train") if function == "helper" else line_of(text, "for i in range(n)") + 1
        stack.append(records.frame_entry(function, line, file, "pkg.tr" if file else None))
    innermost = stack[-1]
    return {"index": 1, "run": "abcd1234", "time": 1.0, "trigger": trigger, "label": "",
            "file": innermost.get("file", SCRIPT), "function": innermost["function"].rpartition(".")[2],
            "frame": "function", "line": innermost["line"], "stack": stack}


def checkpoint(text: str, form: str, trigger: str, saved_type: str, mutation: str = "numpy in place"
               ) -> api.Checkpoint:
    blob = {"hash": "ab" * 16, "size": 1}
    data = manifest(text, form, trigger, mutation)
    scope = "global" if FORMS[form][1][0][0] != "main" else "local of main"
    names = {"w": saved_type, "trainer": "pkg.tr.Trainer", "epoch": "int"}
    data.update(variables=[{"name": n, "type": t, "scope": scope if n != "trainer" else "global", "size": 1,
                            "pickle": blob, "buffers": []} for n, t in names.items()],
                skipped=[], aliases={})
    run = api.Run(NO_STORE, {"id": "abcd1234", "script": SCRIPT, "status": "crashed"})
    return api.Checkpoint(run, records.decode_manifest(records.encode(data)))


def plan(form: str, stop: str, mutation: str, edit: str, saved_type: str | None = None,
         force: bool = False) -> Plan:
    text = script(form, mutation)
    new = text
    if EDITS[edit] is not None:
        old_text, new_text = EDITS[edit]
        new = text.replace(old_text, new_text)
    saved = saved_type or MUTATIONS[mutation][1]
    return Plan(checkpoint(text, form, STOPS[stop], saved, mutation), Module(text, SCRIPT), Module(new, SCRIPT),
                force)


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("stop", list(STOPS))
@pytest.mark.parametrize("form", list(FORMS))
def test_a_statement_that_ran_in_part_on_a_changed_value_is_refused(form, stop, mutation, edit):
    if edit == "above the point" and "main()" in form:
        # main() edited above the point runs again from its start: its locals are made afresh
        assert plan(form, stop, mutation, edit).point.note.startswith("main() runs again from its start: ")
        return
    with pytest.raises(Refusal) as refused:
        plan(form, stop, mutation, edit)
    assert refused.value.forceable
    message = str(refused.value)
    if edit != "above the point":
        text = script(form, mutation)
        assert f"train.py:{line_of(text, '# CALL')} " in message
        assert " with w as it was at the stop" in message or " with trainer as it was" in message


@pytest.mark.parametrize("form", list(FORMS))
def test_force_goes_on_anyway(form):
    assert plan(form, "crash", "numpy in place", "none", force=True) is not None


@pytest.mark.parametrize("form", [f for f in FORMS if "script function" not in f and "nested" not in f
                                  and "method" not in f])
def test_a_value_that_cannot_change_in_place_is_no_reason_to_refuse(form):
    """An int given to the call comes back as it was: nothing in it can have changed."""
    planned = plan(form, "crash", "numpy in place", "below the point", saved_type="int")
    assert planned.ref == "abcd1234@1"


@pytest.mark.parametrize("form", ["script function, top level", "script function, in main()"])
def test_a_script_function_that_changes_nothing_it_is_given_is_re_run(form):
    text = script(form, "numpy in place").replace("w += 1", "total = w.sum() + i")
    checkpoint_ = checkpoint(text, form, "crash", "numpy.ndarray")
    assert Plan(checkpoint_, Module(text, SCRIPT), Module(text, SCRIPT), False).ref == "abcd1234@1"


def function(text: str) -> tuple[Module, object]:
    module = Module(textwrap.dedent(text.split("def f")[0]) + "def f" + text.split("def f")[1], SCRIPT)
    functions = {s.name: s for s in module.body if hasattr(s, "name")}
    return module, functions


@pytest.mark.parametrize(("body", "keeps"), [
    ("return float(w[k] * 2)", True),
    ("total = 0\nfor x in w:\n    total += x\nreturn total", True),
    ("out = []\nout.append(w.sum())\nreturn out", True),
    ("return np.mean(w) + helper(w)", True),
    ("w += 1", False),
    ("w.append(1)", False),
    ("w.update({1: 2})", False),
    ("w.count = 1", False),
    ("w[0] = 1", False),
    ("alias = w\nalias[0] = 1", False),
    ("for row in w:\n    row.fill(0)", False),
    ("global seen\nseen = 1", False),
    ("out = []\nout.append(w)\nreturn out", False),  # the list it made now holds w: not seen after
    ("return other(w)", False),  # a function it does not know
    ("return changes(w)", False),
])
def test_what_a_script_function_may_change(body, keeps):
    module, functions = function("""
        import numpy as np
        def helper(v):
            return v.max()
        def changes(v):
            v[0] = 0
        """ + "def f(w, k=0):\n" + textwrap.indent(body, "    ") + "\n")
    assert keeps_what_it_is_given(functions["f"], module, functions) is keeps


# -- end to end -----------------------------------------------------------------------------------

@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return dict(env, CHKPT_INTERVAL="1h", CHKPT_MIN_SIZE="0")


PACKAGE_SOURCE = """
    import glob, os, signal, time
    import chkpt

    def committed(inside=""):
        \"\"\"Wait until a manifest (one that names `inside`) is in the store, as the OOM killer might.\"\"\"
        pattern = os.path.join(os.environ["CHKPT_DIR"], "runs", "*", "checkpoints", "*.json")
        while not any(inside in open(path).read() for path in glob.glob(pattern)):
            time.sleep(0.01)

    class State:
        def __init__(self):
            self.count = 0
        def __repr__(self):
            return f"State({self.count})"

    def train(w, n):
        for i in range(n):
            MUTATION
            if i == STOP_AT:
                STOP
        return w

    class Trainer:
        def train(self, w, n):
            return train(w, n)
"""
E2E_MUTATIONS = {
    "numpy in place": ("w += 1", "np.zeros(3)", "w[0]"),
    "list append": ("w.append(i)", "[]", "(sum(w), len(w))"),
    "dict update": ("w.update({i: i * i})", "{}", "sorted(w.items())"),
    "attribute": ("w.count = w.count + i", "State()", "w.count"),
}
E2E_STOPS = {
    "crash": "raise RuntimeError('boom')",
    "SIGTERM": "os.kill(os.getpid(), signal.SIGTERM)",
    "SIGKILL after a checkpoint": "chkpt.snapshot('inside'); committed(); os.kill(os.getpid(), signal.SIGKILL)",
    "SIGKILL after a periodic checkpoint": "committed('tr.py'); os.kill(os.getpid(), signal.SIGKILL)",
}
E2E_FORMS = {
    "from-import, in main()": """
        import numpy as np
        from pkg.tr import train, State
        def main():
            print("start")
            w = INIT
            train(w, 10)
            print("result", SHOW)
        if __name__ == "__main__":
            main()
    """,
    "from-import, in a top-level loop": """
        import numpy as np
        from pkg.tr import train, State
        print("start")
        w = INIT
        for rnd in range(2):
            train(w, 10)
        print("result", SHOW)
    """,
    "method of a user class, top level": """
        import numpy as np
        from pkg.tr import Trainer, State
        print("start")
        w = INIT
        Trainer().train(w, 10)
        print("result", SHOW)
    """,
    "from-import, top level": """
        import numpy as np
        from pkg.tr import train, State
        print("start")
        w = INIT
        train(w, 10)
        print("result", SHOW)
    """,
    "through its module, in main()": """
        import numpy as np
        import pkg.tr
        from pkg.tr import State
        def main():
            print("start")
            w = INIT
            pkg.tr.train(w, 10)
            print("result", SHOW)
        if __name__ == "__main__":
            main()
    """,
}


# a method is not continued inside: the statement calling it runs again, on what it changed
REFUSED = {"method of a user class, top level"}


def scenario(work: Path, form: str, mutation: str, stop: str) -> Path:
    change, init, show = E2E_MUTATIONS[mutation]
    write(work, "pkg/__init__.py", "")
    write(work, "pkg/tr.py", PACKAGE_SOURCE.replace("MUTATION", change).replace("STOP_AT", "5")
          .replace("STOP", E2E_STOPS[stop]))
    return write(work, "train.py", E2E_FORMS[form].replace("INIT", init).replace("SHOW", show))


def fix(work: Path) -> None:
    path = work / "pkg" / "tr.py"
    path.write_text(path.read_text().replace("if i == 5:", "if i == -1:"))


def chkpt_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("chkpt:")]


@pytest.mark.parametrize("mutation", list(E2E_MUTATIONS))
@pytest.mark.parametrize("stop", list(E2E_STOPS))
@pytest.mark.parametrize("form", list(E2E_FORMS))
def test_resumed_equals_a_fresh_run_or_refuses(env, work, form, stop, mutation):
    if "periodic" in stop:  # the first periodic checkpoint is due at once; train() waits for it
        env = dict(env, CHKPT_INTERVAL="50ms")
    scenario(work, form, mutation, stop)
    stopped = run([PYTHON, "train.py"], env, work)
    assert stopped.returncode != 0
    fix(work)
    resumed = run([CHKPT, "resume", "train.py"], env, work)
    fresh = run([PYTHON, "train.py"], dict(env, CHKPT="0"), work)
    assert fresh.returncode == 0 and fresh.stdout.endswith("\n")
    if form in REFUSED:  # refused: one line naming the value and where, nothing run
        (line,) = chkpt_lines(resumed.stderr)
        assert "train.py:6 (`Trainer().train(w, 10)`) would run again from its start with w as it was" in line
        assert line.endswith("(--force resumes anyway)") and (resumed.returncode, resumed.stdout) == (2, "")
        return
    assert resumed.returncode == 0, resumed.stderr
    assert stopped.stdout + resumed.stdout == fresh.stdout  # continued inside train(): nothing twice
    assert "in pkg.tr.train()" in chkpt_lines(resumed.stderr)[-1]


def test_a_top_level_call_refused_names_the_argument_and_line(env, work):
    scenario(work, "method of a user class, top level", "numpy in place", "crash")
    run([PYTHON, "train.py"], env, work)
    fix(work)
    resumed = run([CHKPT, "resume", "train.py"], env, work)
    assert resumed.returncode == 2 and resumed.stdout == ""
    (line,) = chkpt_lines(resumed.stderr)
    assert line.startswith("chkpt: cannot resume from ") and "train.py:6 (`Trainer().train(w, 10)`)" in line
    assert "with w as it was at the stop" in line and line.endswith("(--force resumes anyway)")


def test_an_earlier_checkpoint_taken_before_the_call_is_resumed_from_instead(env, work):
    """What the call saw before it first ran is in the snapshot before it: resume starts there."""
    scenario(work, "method of a user class, top level", "list append", "crash")
    path = work / "train.py"
    text = path.read_text().replace("Trainer().train(w, 10)", "chkpt.snapshot('before')\nTrainer().train(w, 10)")
    path.write_text(text.replace("import numpy as np", "import numpy as np\nimport chkpt"))
    stopped = run([PYTHON, "train.py"], env, work)
    fix(work)
    resumed = run([CHKPT, "resume", "train.py"], env, work)
    fresh = run([PYTHON, "train.py"], dict(env, CHKPT="0"), work)
    assert resumed.returncode == 0, resumed.stderr
    assert stopped.stdout + resumed.stdout == fresh.stdout == "start\nresult (45, 10)\n"
    lines = chkpt_lines(resumed.stderr)
    assert lines[0].startswith("chkpt: not from ") and "with w as it was at the stop" in lines[0]
    assert "@1 (explicit" in lines[1]


def test_a_sigterm_inside_a_top_level_script_function_continues_inside_it(env, work):
    """The function a top-level statement calls is resumed inside, like main(): the appends
    before the stop are not made again."""
    script = write(work, "loop.py", """
        import os, signal
        log = []
        def extend(items, n):
            for i in range(n):
                items.append(i * i)
                if i == 5:
                    os.kill(os.getpid(), signal.SIGTERM)
        extend(log, 10)
        print(sum(log), len(log))
    """)
    stopped = run([PYTHON, "loop.py"], env, work)
    assert stopped.returncode == -signal.SIGTERM
    script.write_text(script.read_text().replace("if i == 5:", "if i == -1:"))
    resumed = run([CHKPT, "resume", "loop.py"], env, work)
    fresh = run([PYTHON, "loop.py"], dict(env, CHKPT="0"), work)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == fresh.stdout == "285 10\n"
    ref = chkpt_lines(resumed.stderr)[0].split(" from ")[1].split()[0]
    shown = run([CHKPT, "show", "latest"], env, work).stdout
    assert f"resumed  from {ref} (chkpt resume)" in shown


def test_a_crash_inside_a_script_function_main_calls_that_changes_its_argument_is_refused(env, work):
    script = write(work, "grow.py", """
        def extend(items, n):
            for i in range(n):
                items.append(i * i)
                if i == 5:
                    raise RuntimeError("boom")
        def main():
            log = []
            extend(log, 10)
            print(sum(log), len(log))
        main()
    """)
    assert run([PYTHON, "grow.py"], env, work).returncode == 1
    script.write_text(script.read_text().replace("if i == 5:", "if i == -1:"))
    resumed = run([CHKPT, "resume", "grow.py"], env, work)
    assert resumed.returncode == 2 and resumed.stdout == ""
    (line,) = chkpt_lines(resumed.stderr)
    assert "grow.py:9 (`extend(log, 10)`) would run again from its start with log as it was at the stop" in line
    forced = run([CHKPT, "resume", "grow.py", "--force"], env, work)
    assert forced.returncode == 0 and forced.stdout == "340 16\n"  # what --force risks: the work done twice


@pytest.mark.parametrize("idiom", ["main()", "sys.exit(main())", "raise SystemExit(main())", "exit(main())"])
def test_what_people_write_to_call_main_is_resumed_inside_main(env, work, idiom):
    script = write(work, "job.py", f"""
        import sys
        import numpy as np
        def main():
            print("loading")
            w = np.zeros(3)
            for epoch in range(6):
                w += 1
                print("epoch", epoch)
                if epoch == 3:
                    raise RuntimeError("boom")
            print("w", w[0])
            return 0
        if __name__ == "__main__":
            {idiom}
    """)
    stopped = run([PYTHON, "job.py"], env, work)
    assert stopped.returncode == 1
    script.write_text(script.read_text().replace("if epoch == 3:", "if epoch == -1:"))
    resumed = run([CHKPT, "resume", "job.py"], env, work)
    fresh = run([PYTHON, "job.py"], dict(env, CHKPT="0"), work)
    assert (resumed.returncode, stopped.stdout + resumed.stdout) == (fresh.returncode, fresh.stdout), resumed.stderr
    assert "in the iteration (epoch = 3) of the loop at line 7, called by line 14" in chkpt_lines(resumed.stderr)[-1]
    assert "loading" not in resumed.stdout


def test_an_async_main_is_said_to_run_again_from_its_start(env, work):
    script = write(work, "job.py", """
        import asyncio
        import numpy as np
        data = np.arange(3)
        async def main():
            print("loading")
            print("value", 1 // 0)
        if __name__ == "__main__":
            asyncio.run(main())
    """)
    assert run([PYTHON, "job.py"], env, work).returncode == 1
    script.write_text(script.read_text().replace("1 // 0", "1"))
    resumed = run([CHKPT, "resume", "job.py"], env, work)
    fresh = run([PYTHON, "job.py"], dict(env, CHKPT="0"), work)
    assert (resumed.returncode, resumed.stdout) == (0, fresh.stdout), resumed.stderr
    assert any("main() runs again from its start: it is a coroutine (`async def`)" in line
               for line in chkpt_lines(resumed.stderr))


def test_a_dash_m_run_is_named_by_its_module(env, work):
    write(work, "pkg/__init__.py", "")
    write(work, "pkg/cli.py", "import numpy as np\nx = np.arange(3.0)\nprint(1 // 0)\n")
    assert run([PYTHON, "-m", "pkg.cli"], env, work).returncode == 1
    shown = run([CHKPT, "show", "pkg.cli"], env, work)
    assert shown.returncode == 0 and "command  python -m pkg.cli" in shown.stdout, shown.stderr
    value = run([CHKPT, "show", "latest:pkg.cli", "x"], env, work)
    assert value.returncode == 0 and "array([0., 1., 2.])" in value.stdout, value.stderr
