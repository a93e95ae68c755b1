"""`chkpt resume` end to end: real interpreters, the real store, the `chkpt` console script.

Each corpus script is run until it crashes, edited (the bug fixed), and resumed. What the
crashed run printed followed by what the resumed run printed must be what a fresh run of the
edited script prints, and the resumed run's final state (its exit checkpoint) must equal the
fresh run's. Refusals decided from the manifest and the scripts alone are tested in-process
in test_resume_logic.py; those here need a real run.
"""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest

from chkpt import api
from conftest import CHKPT, PYTHON, run, runs, write

RESUME = [CHKPT, "resume"]


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """No periodic checkpoints, and every value saved, so the states compare in full."""
    return dict(env, CHKPT_INTERVAL="1h", CHKPT_MIN_SIZE="0")


def resume(args: list[str], env: dict[str, str], work: Path):
    return run([*RESUME, *args], env, work)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def final_state(run_id: str) -> dict[str, object]:
    checkpoint = api.resolve(f"{run_id}@exit")[0].checkpoint("exit")
    return {v.name: v.load() for v in checkpoint.variables}


def assert_same_state(resumed: dict[str, object], fresh: dict[str, object]) -> None:
    assert sorted(resumed) == sorted(fresh)
    for name, value in fresh.items():
        assert_same_value(resumed[name], value, name)


def assert_same_value(resumed: object, fresh: object, name: str) -> None:
    if type(fresh).__module__.startswith("chkpt"):  # the placeholder of a value not saved
        assert repr(resumed) == repr(fresh), name
    elif isinstance(fresh, dict):
        assert list(resumed) == list(fresh), name
        for key, value in fresh.items():
            assert_same_value(resumed[key], value, f"{name}[{key!r}]")
    elif hasattr(fresh, "equals"):  # pandas
        assert fresh.equals(resumed), name
    elif type(fresh).__module__.startswith("numpy") or not hasattr(fresh, "__dict__"):
        np.testing.assert_equal(resumed, fresh, err_msg=name)
    else:  # an object of a class defined in the script
        assert sorted(vars(resumed)) == sorted(vars(fresh)), name
        for key, value in vars(fresh).items():
            assert_same_value(vars(resumed)[key], value, f"{name}.{key}")


def crash_fix_resume(env, work, name: str, source: str, fixes: list[tuple[str, str]],
                     resume_args: list[str] = (), script_args: list[str] = ()):
    """Run `source` (it must crash), apply `fixes`, resume; check output and final state
    against a fresh run of the fixed script. Returns the resume process."""
    script = write(work, name, source)
    crashed = run([PYTHON, name, *script_args], env, work)
    assert crashed.returncode == 1, crashed.stderr
    for old, new in fixes:
        edit(script, old, new)
    resumed = resume([name, *resume_args], env, work)
    assert resumed.returncode == 0, resumed.stderr
    fresh = run([PYTHON, name, *script_args], env, work)
    assert fresh.returncode == 0, fresh.stderr
    assert crashed.stdout + resumed.stdout == fresh.stdout
    newest = runs(env, work)
    assert [r["status"] for r in newest[:3]] == ["finished", "finished", "crashed"]
    assert_same_state(final_state(newest[1]["id"]), final_state(newest[0]["id"]))
    return resumed


def notes(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("chkpt:")]


# -- the corpus ------------------------------------------------------------------------------------

PIPELINE = """
    import numpy as np
    import pandas as pd

    def clean(frame):
        return frame[frame["x"] % 7 != 0].reset_index(drop=True)

    raw = pd.DataFrame({"x": np.arange(5000), "y": np.arange(5000) * 0.5})
    print("loaded", len(raw))
    data = clean(raw)
    print("cleaned", len(data))
    stats = {"mean": float(data["y"].mean()), "n": len(data)}
    print("stats", stats)
    report = f"{stats['n']} rows, mean {stats['mean']:.2f}"
    print(report.uper())
    data["z"] = data["y"] * 2
    print("done", float(data["z"].sum()))
"""


def test_pipeline_crashed_on_a_typo_resumes_at_the_crashed_statement(env, work):
    resumed = crash_fix_resume(env, work, "pipeline.py", PIPELINE, [("report.uper()", "report.upper()")])
    assert resumed.stdout.startswith("4285 ROWS")  # nothing before the fixed line ran again visibly
    said = "\n".join(notes(resumed))
    assert "restored" in said and "data" in said and "stats" in said
    assert "re-ran 3 import/definition statements" in said
    assert "continuing at line 15" in said


TRAINING = """
    import numpy as np

    weights = np.zeros(2000)
    history = []
    best = None
    for epoch in range(100):
        weights += 0.01
        loss = float(1.0 / (1.0 + weights.sum()))
        history.append(loss)
        if epoch == 57:
            lr = learnin_rate
        if best is None or loss < best:
            best = loss
        if epoch % 10 == 7:
            print("epoch", epoch, round(loss, 6))
    print("best", round(best, 6), "after", len(history))
"""


def test_training_loop_crashed_at_epoch_57_continues_at_epoch_57(env, work):
    resumed = crash_fix_resume(env, work, "train.py", TRAINING, [("learnin_rate", "0.1")])
    assert resumed.stdout.splitlines()[0].startswith("epoch 57 ")
    assert resumed.stdout.splitlines()[-1] == "best 0.0005 after 100"
    assert "in the iteration (epoch = 57) of the loop at line 7" in notes(resumed)[-1]


FUNCTION_CRASH = """
    import numpy as np

    def summarize(values):
        scaled = values / values.max()
        return {"mean": float(scaled.mean()), "top": float(scaled[-10:].sum())}

    values = np.linspace(1.0, 50.0, 4000)
    print("values", values.size)
    summary = summarize(values)
    print(sorted(summary.items()))
"""


def test_crash_inside_a_function_called_by_a_top_level_statement_resumes_inside_it(env, work):
    source = FUNCTION_CRASH.replace("scaled[-10:].sum()", "scaled[-10:].summ()")
    resumed = crash_fix_resume(env, work, "summary.py", source, [("summ()", "sum()")])
    assert "restored 3 values: values, summarize():scaled, summarize():values" in notes(resumed)[1]
    assert notes(resumed)[-1].endswith("continuing at line 6 in summarize(), called by line 10; 1 statement "
                                       "of summarize() before it skipped")


ENUMERATE = """
    import numpy as np

    names = ["alpha", "beta", "gamma", "delta", "epsilon"]
    totals = {}
    for i, name in enumerate(names, 1):
        block = np.full(300, float(i))
        totals[name] = float(block.sum())
        print(i, name, totals[name], name[7].upper() if len(name) > 5 else "")
    print(sorted(totals.items()))
"""


def test_enumerate_loop_continues_in_the_iteration_that_crashed(env, work):
    resumed = crash_fix_resume(env, work, "numbered.py", ENUMERATE, [("name[7]", "name[-1]")])
    assert resumed.stdout.splitlines()[0].startswith("5 epsilon")


SEQUENCE = """
    import numpy as np

    seen = []
    acc = np.zeros(500)
    for word in ["red", "green", "blue", "cyan"]:
        seen.append(word)
        acc += len(word)
        print(word, 10 / (len(word) - 4))
    print(seen, float(acc.sum()))
"""


def test_loop_over_a_list_continues_with_the_item_that_crashed(env, work):
    fix = ("(len(word) - 4))", "(len(word) - 4) if len(word) != 4 else 0)")
    resumed = crash_fix_resume(env, work, "seq.py", SEQUENCE, [fix])
    assert resumed.stdout.splitlines()[0].startswith("blue")


WHILE = """
    import numpy as np

    state = np.ones(400)
    step = 0
    while step < 8:
        state = state * 1.5
        step += 1
        print("step", step, float(state[0]), 1 // (step - 5))
    print("final", step, float(state.sum()))
"""


def test_while_loop_continues_mid_iteration(env, work):
    fix = ("1 // (step - 5))", "1 // (step - 5) if step != 5 else 0)")
    resumed = crash_fix_resume(env, work, "grow.py", WHILE, [fix])
    assert resumed.stdout.splitlines()[0].startswith("step 5 ")


MODEL = """
    import threading
    import numpy as np

    class Model:
        def __init__(self):
            self.weights = np.zeros(3000)
            self.steps = 0

        def fit(self, data):
            print("fitting")
            self.weights = self.weights + data
            self.steps += 1

    lock = threading.Lock()
    model = Model()
    model.fit(np.arange(3000.0))
    parts = {"weights": model.weights, "guard": lock}
    with lock:
        score = float(parts["weights"].mean()) / model.step
    print("score", score)
"""


def test_objects_and_unsaveable_values_are_rebuilt_then_given_their_saved_data(env, work):
    resumed = crash_fix_resume(env, work, "model.py", MODEL, [("/ model.step", "/ model.steps")])
    said = "\n".join(notes(resumed))
    assert "restored 2 values: model, parts['weights']" in said  # parts held a lock: rebuilt
    assert "line 15 (`lock = threading.Lock()`)" in said and "line 18 (`parts = " in said
    assert "fit" not in said and "fitting" not in resumed.stdout


def test_a_resumed_run_that_crashes_again_can_be_resumed_again(env, work):
    source = TRAINING.replace("round(best, 6)", "round(bestt, 6)")
    script = write(work, "train.py", source)
    first = run([PYTHON, "train.py"], env, work)
    edit(script, "learnin_rate", "0.1")
    second = resume(["train.py"], env, work)
    assert second.returncode == 1 and "bestt" in second.stderr
    edit(script, "bestt", "best")
    third = resume(["train.py"], env, work)
    assert third.returncode == 0, third.stderr
    fresh = run([PYTHON, "train.py"], env, work)
    assert first.stdout + second.stdout + third.stdout == fresh.stdout
    assert third.stdout == "best 0.0005 after 100\n"
    assert [r["status"] for r in runs(env, work)] == ["finished", "finished", "crashed", "crashed"]


def test_after_a_finished_run_only_the_added_lines_run(env, work):
    script = write(work, "done.py", "import numpy as np\nimport sys\nx = np.arange(10.0)\n"
                                    "print('computed', sys.argv[1:])\n")
    assert run([PYTHON, "done.py", "a", "b"], env, work).stdout == "computed ['a', 'b']\n"
    script.write_text(script.read_text() + "print('mean', x.mean(), sys.argv[1:])\n")
    again = resume(["done.py"], env, work)
    assert (again.returncode, again.stdout) == (0, "mean 4.5 ['a', 'b']\n"), again.stderr
    other = resume(["done.py", "--from", again_ref(env, work, 1), "--", "c"], env, work)
    assert other.stdout == "mean 4.5 ['c']\n", other.stderr


def again_ref(env, work, nth: int) -> str:
    return runs(env, work)[nth]["id"] + "@exit"


def test_a_top_level_snapshot_is_a_resume_point(env, work):
    script = write(work, "snap.py", """
        import chkpt
        import numpy as np
        big = np.arange(2000.0)
        print("expensive part done")
        chkpt.snapshot("after load")
        print("sum", big.sum())
        print("oops", big.mediann())
    """)
    run([PYTHON, "snap.py"], env, work)
    edit(script, "print(\"oops\", big.mediann())", "print(\"median\", np.median(big))")
    ref = runs(env, work)[0]["id"] + "@1"
    resumed = resume(["snap.py", "--from", ref], env, work)
    assert resumed.stdout == "sum 1999000.0\nmedian 999.5\n", resumed.stderr
    assert "continuing at line 7" in notes(resumed)[-1]


def test_the_resumed_run_is_traced_and_says_where_it_came_from(env, work):
    crash_fix_resume(env, work, "train.py", TRAINING, [("learnin_rate", "0.1")])
    listed = runs(env, work)
    resumed_run = listed[1]
    assert resumed_run["script"] == str(work / "train.py")
    shown = json.loads(run([PYTHON, "-m", "chkpt", "show", resumed_run["id"], "--json"],
                           env, work).stdout)
    exit_vars = {v["name"] for v in shown["checkpoints"][-1]["variables"]}
    assert {"weights", "history", "best", "epoch"} <= exit_vars


# -- refusals: one sentence on stderr, exit status 2 -------------------------------------------------

def refused(result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chkpt: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_module_function_calls_do_not_rerun_a_saved_value_but_random_draws_come_out_as_in_a_full_run(env, work):
    resumed = crash_fix_resume(env, work, "frames.py", """
        import numpy as np
        import pandas as pd

        def slow_load():
            with open("loads.txt", "a") as log:   # stands for a 5 s load
                log.write("load\\n")
            return {"a": np.arange(1000.0), "b": np.ones(1000)}

        np.random.seed(7)
        df = pd.DataFrame(slow_load())
        noise = np.random.rand(3)
        both = pd.concat([df, df])
        print(both.shape, round(float(noise.sum()), 6))
        print(round(float(np.random.rand(2).sum()), 6), totl)
    """, [("totl", "both.shape[0]")])
    assert (work / "loads.txt").read_text() == "load\n" * 2  # the crashed run's and the fresh run's
    assert "line 10 (`np.random.seed(7)`), line 12 (`noise = np.random.rand(3)`)" in notes(resumed)[2]


# -- inside main() ---------------------------------------------------------------------------------

MAIN = """
    import numpy as np

    def slow_load():
        with open("loads.txt", "a") as log:   # stands for minutes of loading
            log.write("load\\n")
        return np.arange(5000.0)

    def report(history):
        return f"best {min(history):.6f} of {len(history)}"

    def main():
        data = slow_load()
        print("loaded", data.size)
        weights = np.zeros(10)
        history = []
        for epoch in range(20):
            weights += data[:10] * 0.001
            history.append(float(1.0 / (1.0 + weights.sum())))
            if epoch == 12:
                lr = learnin_rate
            print("epoch", epoch, round(history[-1], 6))
        print(report(history))
        return {"weights": weights, "history": history}

    if __name__ == "__main__":
        result = main()
        print("final", round(result["history"][-1], 6))
"""


def test_a_crash_inside_main_resumes_inside_it_without_its_loading(env, work):
    resumed = crash_fix_resume(env, work, "train.py", MAIN, [("learnin_rate", "0.1")])
    assert (work / "loads.txt").read_text() == "load\n" * 2  # the crashed run's and the fresh run's
    assert resumed.stdout.splitlines()[0].startswith("epoch 12 ")
    said = notes(resumed)
    assert "main():epoch" in said[1] and "main():weights" in said[1] and "main():data" in said[1]
    assert said[-1] == ("chkpt: continuing at line 20, in the iteration (epoch = 12) of the loop at line 17, "
                        "called by line 26; 4 statements of main() before it skipped")


def test_a_crash_in_a_function_main_calls_reruns_that_call_only(env, work):
    source = MAIN.replace("if epoch == 12:", "if epoch == -1:").replace("min(history)", "min(histroy)")
    resumed = crash_fix_resume(env, work, "report.py", source, [("min(histroy)", "min(history)")])
    assert (work / "loads.txt").read_text() == "load\n" * 2
    assert resumed.stdout.startswith("best ")  # the loop is not run again either
    assert notes(resumed)[-1].startswith("chkpt: continuing at line 23 in main(), called by line 26; 5 statements")


def test_a_killed_run_resumes_from_a_periodic_checkpoint_in_mains_loop(env, work):
    env = dict(env, CHKPT_INTERVAL="100ms")
    script = write(work, "slow.py", """
        import os, signal, time
        import numpy as np
        import chkpt
        from chkpt import watch

        def main():
            batches = [np.full(1000, k / 7) for k in range(40)]
            weights = np.zeros(1000)
            print("loaded")
            for step, batch in enumerate(batches):
                weights = weights * 0.5 + batch
                time.sleep(0.03)
                print("step", step, flush=True)
                if step >= 30 and looped():
                    os.kill(os.getpid(), signal.SIGKILL)
            with open("total.txt", "w") as out:
                out.write(repr(float(weights.sum())))
        LOOPED
        if __name__ == "__main__":
            main()
    """.replace("LOOPED", textwrap.indent(LOOPED, " " * 8).strip() + "\n"))
    killed = run([PYTHON, "slow.py"], env, work)
    last = killed.stdout.splitlines()[-1]
    assert killed.returncode < 0 and last.startswith("step ") and 30 <= int(last.split()[1]) < 40, killed.stdout
    shown = json.loads(run([PYTHON, "-m", "chkpt", "show", "latest", "--json"], env, work).stdout)
    assert any(c.get("boundary") == "loop" and c.get("function") == "main" for c in shown["checkpoints"]), \
        shown["checkpoints"]
    edit(script, "if step >= 30 and looped():", "if step == -1:")
    resumed = resume(["slow.py"], env, work)
    assert resumed.returncode == 0, resumed.stderr
    first = resumed.stdout.splitlines()[0]
    assert first.startswith("step ") and int(first.split()[1]) > 0
    resumed_total = (work / "total.txt").read_text()
    fresh = run([PYTHON, "slow.py"], dict(env, CHKPT="0"), work)
    assert fresh.stdout.endswith(resumed.stdout)
    called = script.read_text().splitlines().index('if __name__ == "__main__":') + 1  # the top-level statement
    assert f", step = {int(first.split()[1]) - 1}), called by line {called}" in resumed.stderr
    assert resumed_total == (work / "total.txt").read_text()


def test_a_job_preempted_inside_main_resumes_to_the_result_of_an_uninterrupted_run(env, work):
    env = dict(env, CHKPT_INTERVAL="1h")  # no periodic checkpoint: the SIGTERM one must do
    script = write(work, "job.py", """
        import os, signal, sys, time
        import numpy as np

        def main(epochs):
            weights = np.zeros(1000)
            for epoch in range(epochs):
                weights += epoch
                time.sleep(0.01)
                print("epoch", epoch, flush=True)
                if epoch == 25:
                    os.kill(os.getpid(), signal.SIGTERM)   # the scheduler preempts the job
            np.save("weights.npy", weights)
            return 0

        if __name__ == "__main__":
            sys.exit(main(int(sys.argv[1])))
    """)
    killed = run([PYTHON, "job.py", "40"], env, work)
    assert killed.returncode == -signal.SIGTERM and killed.stdout.endswith("epoch 25\n")
    edit(script, "if epoch == 25:", "if epoch == -1:")   # the requeued job is not preempted again
    resumed = resume(["job.py"], env, work)
    assert resumed.returncode == 0, resumed.stderr
    resumed_weights = np.load(work / "weights.npy")
    fresh = run([PYTHON, "job.py", "40"], dict(env, CHKPT="0"), work)
    assert resumed.stdout.splitlines()[0] in ("epoch 25", "epoch 26")
    assert fresh.stdout.endswith(resumed.stdout)
    np.testing.assert_array_equal(resumed_weights, np.load(work / "weights.npy"))


def test_main_called_from_a_loop_runs_again_from_its_start_and_says_why(env, work):
    resumed = crash_fix_resume(env, work, "seeds.py", """
        import numpy as np

        def main(seed):
            values = np.random.default_rng(seed).random(100)
            check = 1 // (seed - 1)
            print(seed, round(float(values.sum()), 6), check)

        table = np.zeros(1000)
        for seed in range(3):
            main(seed)
    """, [("1 // (seed - 1)", "1 // (seed - 1) if seed != 1 else 5")])
    assert "main() runs again from its start: it is called inside a `for` statement" in notes(resumed)[-2]


def test_refuses_when_a_top_level_statement_before_main_was_changed(env, work):
    script = write(work, "conf.py", "SCALE = 2\n" + textwrap.dedent(MAIN))
    run([PYTHON, "conf.py"], env, work)
    edit(script, "learnin_rate", "0.1")
    edit(script, "SCALE = 2", "SCALE = 3")
    refused(resume(["conf.py"], env, work), "line 1 (SCALE = 3), before the resume point, was changed", "--force")


@pytest.mark.parametrize("runner", [[PYTHON, "-m"], [CHKPT, "run", "-m"]])
def test_a_dash_m_run_resumes_with_dash_m(env, work, runner):
    write(work, "pkg/__init__.py", "")
    write(work, "pkg/helpers.py", "def scale(x):\n    return x * 2\n")
    module = write(work, "pkg/train.py", """
        import sys
        import numpy as np
        from .helpers import scale

        def main():
            data = scale(np.arange(1000.0))
            print("args", sys.argv[1:])
            total = 0.0
            for step in range(6):
                total += float(data[step])
                if step == 3:
                    print(bad_name)
                print("step", step)
            print("total", total)

        if __name__ == "__main__":
            main()
    """)
    crashed = run([*runner, "pkg.train", "a"], env, work)
    assert crashed.returncode == 1 and runs(env, work)[0]["argv"] == ["-m", "pkg.train", "a"]
    refused(resume(["pkg/train.py"], env, work), "started with python -m pkg.train",
            "resume it with chkpt resume -m pkg.train")
    edit(module, "print(bad_name)", "pass")
    resumed = resume(["-m", "pkg.train"], env, work)
    assert resumed.returncode == 0, resumed.stderr
    fresh = run([PYTHON, "-m", "pkg.train", "a"], dict(env, CHKPT="0"), work)
    assert crashed.stdout + resumed.stdout == fresh.stdout
    assert runs(env, work)[0]["argv"] == ["-m", "pkg.train", "a"]
    refused(resume(["-m", "pkg.nothing"], env, work), "cannot run -m pkg.nothing")


def test_refuses_when_a_statement_before_the_point_was_changed_unless_forced(env, work):
    script = write(work, "pipeline.py", PIPELINE)
    run([PYTHON, "pipeline.py"], env, work)
    edit(script, "report.uper()", "report.upper()")
    edit(script, "np.arange(5000) * 0.5", "np.arange(5000) * 0.25")
    refused(resume(["pipeline.py"], env, work), "line 8", "was changed", "--force")
    forced = resume(["pipeline.py", "--force"], env, work)
    assert forced.returncode == 0 and forced.stdout.startswith("4285 ROWS"), forced.stderr


def test_a_function_edited_above_the_crash_runs_again_from_its_start(env, work):
    source = FUNCTION_CRASH.replace("scaled[-10:].sum()", "scaled[-10:].summ()")
    resumed = crash_fix_resume(env, work, "summary.py", source,
                               [("summ()", "sum()"), ("values.max()", "values.min()")])
    assert "summarize() runs again from its start: line 5" in notes(resumed)[-2]
    assert notes(resumed)[-1] == "chkpt: continuing at line 10"


def test_refuses_when_a_value_the_loop_changed_was_not_saved(env, work):
    script = write(work, "batches.py", """
        import numpy as np
        data = np.arange(12.0)
        batches = (x * 2 for x in data)
        for step in range(10):
            batch = next(batches)
            print(step, batch, 1 // (step - 6))
    """)
    run([PYTHON, "batches.py"], env, work)
    edit(script, "1 // (step - 6)", "step")
    refused(resume(["batches.py"], env, work), "batches", "was not saved", "--force")


def test_refuses_to_restart_a_loop_over_an_iterator_part_way(env, work):
    script = write(work, "lines.py", """
        import numpy as np
        arr = np.zeros(100)
        def numbers():
            yield from range(5)
        for n in numbers():
            arr[n] = n
            print(n, 1 // (n - 3))
    """)
    run([PYTHON, "lines.py"], env, work)
    edit(script, "1 // (n - 3)", "n")
    refused(resume(["lines.py"], env, work), "generator", "cannot be restarted")


def test_refuses_without_a_run_or_with_an_unknown_reference(env, work):
    write(work, "never.py", "print('hi')\n")
    refused(resume(["never.py"], env, work), "no run of never.py")
    refused(resume(["never.py", "--from", "ffff"], env, work), "ffff")


# Whether a periodic checkpoint at a loop's line is in the store; if not, it first waits (at most
# a minute) until the monitor is armed for the loop's next iteration, which then takes one. A
# script kills itself once this says so (from some step on), not at a moment a timer may miss.
LOOPED = """
def looped():
    deadline = time.time() + 60
    while time.time() < deadline:
        if [c for r in chkpt.runs() for c in r.checkpoints if c.manifest.get("boundary") == "loop"]:
            return True
        if watch.active().monitor.waiting_for_boundary:
            return False
        time.sleep(0.005)
    return False
"""


def test_a_killed_run_resumes_from_its_last_periodic_checkpoint_between_iterations(env, work):
    env = dict(env, CHKPT_INTERVAL="100ms")
    script = write(work, "slow.py", """
        import os, signal, time
        import numpy as np
        import chkpt
        from chkpt import watch
        LOOPED
        acc = np.zeros(1000)
        for step in range(40):
            acc += step
            time.sleep(0.03)
            print("step", step, flush=True)
            if step >= 30 and looped():
                os.kill(os.getpid(), signal.SIGKILL)
        print("total", acc.sum())
    """.replace("LOOPED", textwrap.indent(LOOPED, " " * 8).strip()))
    killed = run([PYTHON, "slow.py"], env, work)
    last = killed.stdout.splitlines()[-1]
    assert killed.returncode < 0 and last.startswith("step ") and 30 <= int(last.split()[1]) < 40, killed.stdout
    shown = json.loads(run([PYTHON, "-m", "chkpt", "show", "latest", "--json"], env, work).stdout)
    assert any(c.get("boundary") == "loop" for c in shown["checkpoints"]), shown["checkpoints"]
    edit(script, "if step >= 30 and looped():", "if step == -1:")
    resumed = resume(["slow.py"], env, work)
    assert resumed.returncode == 0, resumed.stderr
    fresh = run([PYTHON, "slow.py"], dict(env, CHKPT="0"), work)
    first = resumed.stdout.splitlines()[0]
    assert first.startswith("step ") and int(first.split()[1]) > 0
    assert fresh.stdout.endswith(resumed.stdout) and "after the iteration (step = " in resumed.stderr


def test_a_crash_in_a_function_called_from_a_loop_continues_in_that_iteration(env, work):
    crash_fix_resume(env, work, "calls.py", """
        import numpy as np

        def step(values, k):
            return float(values[k] * (1 if k != 4 else missing_factor))

        values = np.arange(1000.0)
        out = []
        for k in range(8):
            out.append(step(values, k))
            print(k, out[-1])
        print(sum(out))
    """, [("missing_factor", "1")])


def test_a_job_preempted_by_sigterm_resumes_from_the_signal_checkpoint_to_the_full_result(env, work):
    env = dict(env, CHKPT_INTERVAL="1h")  # no periodic checkpoint: the SIGTERM one must do
    script = write(work, "train.py", """
        import os, signal, time
        import numpy as np
        weights = np.zeros(1000)
        for epoch in range(40):
            weights += epoch
            time.sleep(0.01)
            print("epoch", epoch, flush=True)
            if epoch == 25:
                os.kill(os.getpid(), signal.SIGTERM)   # the scheduler preempts the job
        print("total", weights.sum())
    """)
    killed = run([PYTHON, "train.py"], env, work)
    assert killed.returncode == -signal.SIGTERM and killed.stdout.endswith("epoch 25\n")
    edit(script, "if epoch == 25:", "if epoch == -1:")   # the requeued job is not preempted again
    resumed = resume(["train.py"], env, work)
    assert resumed.returncode == 0, resumed.stderr
    fresh = run([PYTHON, "train.py"], dict(env, CHKPT="0"), work)
    assert resumed.stdout.splitlines()[0] in ("epoch 25", "epoch 26")
    assert fresh.stdout.endswith(resumed.stdout)   # the same result as a run that was never stopped


# -- new arguments ---------------------------------------------------------------------------------

def resume_with_new_arguments(env, work, name: str, source: str) -> tuple[list[str], list[str]]:
    """Run `source` with 5 (it crashes), fix it, resume with the same arguments, then the crashed
    run with 7; each prints what a fresh run with its arguments prints. The notes of both."""
    script = write(work, name, source)
    assert run([PYTHON, name, "5"], env, work).returncode == 1
    edit(script, " / zero", "")
    same = resume([name], env, work)
    assert (same.returncode, same.stdout) == (0, run([PYTHON, name, "5"], dict(env, CHKPT="0"), work).stdout)
    crashed = next(r["id"] for r in runs(env, work) if r["status"] == "crashed")
    changed = resume([name, "--from", f"{crashed}@crash", "--", "7"], env, work)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == run([PYTHON, name, "7"], dict(env, CHKPT="0"), work).stdout == "total 42.0\n"
    return notes(same), notes(changed)


def test_resuming_with_new_arguments_recomputes_the_top_level_values_read_from_them(env, work):
    same, changed = resume_with_new_arguments(env, work, "top.py", """
        import sys
        import numpy as np
        n = int(sys.argv[1])
        data = np.arange(n) * 2.0
        scale = np.ones(3)
        print("total", data.sum() * scale[0] / zero)
    """)
    assert "chkpt: restored 3 values: data, n, scale" in same and not any("arguments" in s for s in same)
    assert "chkpt: restored 1 value: scale" in changed
    assert "chkpt: re-ran line 4 (`n = int(sys.argv[1])`), line 5 (`data = np.arange(n) * 2.0`): " \
        "the arguments changed" in changed


def test_resuming_with_new_arguments_recomputes_the_locals_of_main_read_from_them(env, work):
    same, changed = resume_with_new_arguments(env, work, "mainly.py", """
        import argparse
        import numpy as np

        def main():
            parser = argparse.ArgumentParser()
            parser.add_argument("n", type=int)
            n = parser.parse_args().n
            data = np.arange(n) * 2.0
            print("total", data.sum() / zero)

        main()
    """)
    assert not any("arguments" in s for s in same) and any("main():n" in s for s in same)
    assert "chkpt: re-ran in main(): line 8 (`n = parser.parse_args().n`), line 9 (`data = np.arange(n) * 2.0`): " \
        "the arguments changed" in changed
