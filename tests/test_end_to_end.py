"""Issue 2's user story: install, run a script, list it, show it, load it back."""

from __future__ import annotations

import os
import subprocess
import textwrap

from conftest import PYTHON, chkpt, chkpt_json, python, runs, write

ANALYSIS = """
    import numpy as np
    import pandas as pd
    arr = np.arange(50_000, dtype=np.float64)
    df = pd.DataFrame({"x": arr, "y": arr * 2, "name": ["n%d" % i for i in range(50_000)]})
    print("ok")
"""


def test_script_run_is_listed_shown_and_loadable(env, work):
    write(work, "analysis.py", ANALYSIS)
    result = python(["analysis.py"], env, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")

    listed = runs(env, work)
    assert len(listed) == 1
    run = listed[0]
    assert run["script"] == str(work / "analysis.py")
    assert run["status"] == "finished" and run["exit_code"] == 0
    assert run["checkpoints"] == 1 and run["size"] > 800_000

    shown = chkpt_json(["show", "latest"], env, work)
    names = {v["name"]: v for v in shown["checkpoints"][-1]["variables"]}
    assert names["arr"]["type"] == "numpy.ndarray" and names["arr"]["shape"] == [50_000]
    assert names["df"]["type"] == "pandas.DataFrame" and names["df"]["shape"] == [50_000, 3]
    assert shown["checkpoints"][-1]["trigger"] == "exit"

    check = f"""
import chkpt, numpy as np, pandas as pd
exec(open({str(work / 'analysis.py')!r}).read().replace('print("ok")', ''))
pd.testing.assert_frame_equal(chkpt.load("df", run="latest"), df)
np.testing.assert_array_equal(chkpt.load("arr"), arr)
print("equal")
"""
    loaded = python(["-c", check], env, work)
    assert loaded.stdout == "equal\n", loaded.stderr


def test_human_listing_names_the_script_and_its_variables(env, work):
    write(work, "analysis.py", ANALYSIS)
    python(["analysis.py"], env, work)
    listing = chkpt(["ls"], env, work)
    assert listing.returncode == 0
    assert "analysis.py" in listing.stdout and "finished" in listing.stdout
    shown = chkpt(["show", "latest"], env, work)
    assert "pandas.DataFrame" in shown.stdout and "50000x3" in shown.stdout


def test_chkpt_off_leaves_no_trace_and_imports_nothing(env, work):
    listing = "import sys\nprint(sorted(m for m in sys.modules if m.startswith('chkpt')))\n"
    write(work, "analysis.py", textwrap.dedent(ANALYSIS) + listing)
    env["CHKPT"] = "0"
    result = python(["analysis.py"], env, work)
    assert result.stdout == "ok\n['chkpt_autoload']\n", result.stderr  # the start-up hook alone
    assert not os.path.exists(env["CHKPT_DIR"])


def test_other_off_spellings_also_disable(env, work):
    write(work, "s.py", "import sys; print('chkpt' in sys.modules)")
    for value in ("false", "OFF", "no", " 0 "):
        env["CHKPT"] = value
        assert python(["s.py"], env, work).stdout == "False\n"
    env["CHKPT"] = "1"
    assert python(["s.py"], env, work).stdout == "True\n"


def test_a_script_with_no_data_leaves_no_run(env, work):
    write(work, "hello.py", "print('hello')\n")
    assert python(["hello.py"], env, work).stdout == "hello\n"
    assert not os.path.exists(os.path.join(env["CHKPT_DIR"], "runs")) or runs(env, work) == []


def test_a_script_that_crashed_before_saving_anything_is_listed_as_crashed(env, work):
    write(work, "early.py", "import os\nprint('starting')\nprint(1 // 0)\n")
    crashed = python(["early.py"], env, work)
    assert crashed.returncode == 1 and crashed.stdout == "starting\n"
    assert crashed.stderr.startswith("Traceback") and "chkpt" not in crashed.stderr
    [listed] = runs(env, work)
    assert listed["status"] == "crashed" and listed["script"].endswith("early.py")


def test_store_is_private_to_the_user(env, work):
    write(work, "analysis.py", ANALYSIS)
    python(["analysis.py"], env, work)
    mode = os.stat(env["CHKPT_DIR"]).st_mode & 0o777
    assert mode == 0o700


def test_a_crash_is_recorded_with_its_exception_and_line(env, work):
    write(work, "crash.py", """
        import numpy as np
        data = np.ones(10_000)
        def step(batch):
            total = batch.sum()
            raise KeyError("revenue")
        step(data * 2)
    """)
    plain = subprocess.run([PYTHON, "crash.py"], cwd=work, capture_output=True, text=True,
                           env=dict(env, CHKPT="0"))
    traced = python(["crash.py"], env, work)
    assert (traced.returncode, traced.stdout, traced.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    run = runs(env, work)[0]
    assert run["status"] == "crashed" and run["exception"] == "KeyError: 'revenue'"
    crash = chkpt_json(["show", "latest@crash"], env, work)["checkpoints"][-1]
    assert crash["trigger"] == "crash" and crash["line"] == 6 and crash["function"] == "step"
    names = {v["name"] for v in crash["variables"]}
    assert {"data", "batch", "total"} <= names
