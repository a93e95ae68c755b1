"""A finished main() script keeps main()'s final locals: the "return" checkpoint, taken as it returns."""

from __future__ import annotations

import pytest

from chkpt import api
from conftest import chkpt, python, write

SCRIPT = """
    import glob, os, sys, time
    import numpy as np
    import chkpt

    def committed():
        \"\"\"Wait until a checkpoint taken inside main() is in the store.\"\"\"
        pattern = os.path.join(os.environ["CHKPT_DIR"], "runs", "*", "checkpoints", "*.json")
        while not any('"function":"main"' in open(path).read() for path in glob.glob(pattern)):
            time.sleep(0.01)

    class Noisy:
        def __del__(self):
            print("finalized", flush=True)

    def main():
        GRAB
        w = np.zeros(3)
        noisy = Noisy()
        for i in range(20):
            w += 1
            if i == 9:
                WAIT
        print("w", w[0])
        return 0

    if __name__ == "__main__":
        IDIOM
"""
GRAB_ALL = ("mon = sys.monitoring\n        for t in range(6):\n            mon.use_tool_id(t, 'mine')\n"
            "        print([mon.get_tool(t) for t in range(6)])")


def scenario(work, idiom: str, wait: str = "committed()", grab: str = "pass") -> None:
    write(work, "fin.py", SCRIPT.replace("IDIOM", idiom).replace("WAIT", wait).replace("GRAB", grab))


@pytest.mark.parametrize("idiom", ["main()", "sys.exit(main())", "raise SystemExit(main())"])
def test_a_finished_main_gives_its_final_values(env, work, idiom):
    """A periodic checkpoint inside main() (w = 10.0, waited for on disk) is not the answer:
    the run's values are main()'s as it returned, and its finalizers ran when they would."""
    scenario(work, idiom)
    env = dict(env, CHKPT_INTERVAL="50ms", CHKPT_MIN_SIZE="0")
    finished = python(["fin.py"], env, work)
    plain = python(["fin.py"], dict(env, CHKPT="0"), work)
    assert (finished.returncode, finished.stdout, finished.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert finished.stdout == "w 20.0\nfinalized\n"  # noisy is finalized as main() returns
    checkpoints = api.resolve("latest")[0].checkpoints
    inside = next(c for c in checkpoints if c.trigger == "periodic" and c.function == "committed")
    assert inside.load("w").tolist() == [10.0] * 3
    assert [c.trigger for c in checkpoints][-2:] == ["return", "exit"]
    # a fresh process
    loaded = python(["-c", "import chkpt; print(chkpt.load('w', script='fin.py').tolist())"], env, work)
    assert (loaded.returncode, loaded.stdout) == (0, "[20.0, 20.0, 20.0]\n"), loaded.stderr
    run = api.resolve("latest")[0]
    shown = chkpt(["show", run.id, "w"], env, work)  # the exit checkpoint has no local of main()
    returned = checkpoints[-2]
    assert f"no variable 'w' in {run.id}@{returned.index + 1}; {returned.ref} has it, as main() returned" \
        in shown.stderr
    assert chkpt(["show", returned.ref, "w"], env, work).stdout.endswith("array([20., 20., 20.])\n")


def test_with_every_tool_id_taken_the_value_is_said_not_to_be_final(env, work):
    """The program holds every tool id inside main(): chkpt cannot see main() return. Its
    output is as without chkpt, and loading w says it is as at the snapshot inside main()."""
    scenario(work, "sys.exit(main())", "chkpt.snapshot('half way')", GRAB_ALL)
    env = dict(env, CHKPT_INTERVAL="1h", CHKPT_MIN_SIZE="0")
    finished = python(["fin.py"], env, work)
    plain = python(["fin.py"], dict(env, CHKPT="0"), work)
    assert (finished.returncode, finished.stdout, finished.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert finished.stdout == "['mine', 'mine', 'mine', 'mine', 'mine', 'mine']\nw 20.0\nfinalized\n"
    run = api.resolve("latest")[0]
    loaded = python(["-c", "import chkpt; chkpt.load('w', script='fin.py')"], env, work)
    assert loaded.returncode == 1
    last = loaded.stderr.strip().splitlines()[-1]
    assert f"'w' of run {run.id} is saved only as it was at checkpoint 1 inside main(), not as main() ended" in last
    assert last.endswith(f"load that value with chkpt.load('w', run='{run.id}@1')")
    assert api.load("w", run=f"{run.id}@1").tolist() == [10.0] * 3
    shown = chkpt(["show", run.id, "w"], env, work)
    assert shown.returncode != 0 and shown.stdout == ""
    assert f"'w' of run {run.id} is saved only as it was at checkpoint 1 inside main()" in shown.stderr


def test_main_ended_by_sys_exit_inside_it_is_not_final(env, work):
    """main() never returns (sys.exit inside it): its locals at the snapshot are not passed off as final."""
    scenario(work, "main()", "chkpt.snapshot('half way')")
    write(work, "fin.py", (work / "fin.py").read_text().replace("    return 0\n", "    sys.exit(0)\n"))
    env = dict(env, CHKPT_INTERVAL="1h", CHKPT_MIN_SIZE="0")
    finished = python(["fin.py"], env, work)
    plain = python(["fin.py"], dict(env, CHKPT="0"), work)
    assert (finished.returncode, finished.stdout, finished.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    run = api.resolve("latest")[0]
    assert run.checkpoints[-1].manifest.get("not_final") == "main"
    with pytest.raises(api.NotFound, match=r"load that value with chkpt.load\('w', run='.*@1'\)"):
        api.load("w", script=str(work / "fin.py"))


@pytest.mark.parametrize(("ending", "found"), [
    ("main()", ("main", 4, 4)),
    ("sys.exit(main())", ("main", 4, 4)),
    ("raise SystemExit(main())", ("main", 4, 4)),
    ("exit(main())", ("main", 4, 4)),
    ("result = main()", ("main", 4, 4)),
    ("if __name__ == '__main__':\n    args = 1\n    sys.exit(\n        main())", ("main", 6, 7)),
    ("for k in range(2):\n    main()", None),
    ("main()\nprint('done')", None),
    ("main(main())", None),
    ("helper()", None),
])
def test_main_call_is_the_last_statement_calling_a_script_function_once(ending, found):
    from chkpt.monitor import main_call

    assert main_call(f"import sys\ndef main():\n    return 0\n{ending}\n".encode()) == found


TRAINER = """
    import os
    import numpy as np

    class MLP:
        def __init__(self):
            self.w = np.zeros(4)

    def fit(model, epochs):
        for i in range(epochs):
            model.w += 1
            if i == 5 and not os.environ.get("FIXED"):
                raise RuntimeError("bug in epoch 5")
        return model
"""
TRAIN = """
    from mylib.model import MLP, fit

    def main():
        model = MLP()
        fit(model, 10)
        print("w", model.w[0])
        return 0

    if __name__ == "__main__":
        raise SystemExit(main())
"""


def test_a_resumed_main_keeps_its_final_locals_small_ones_too(env, work):
    """Resume continues inside fit(), called by main(); the resumed run's model (129 bytes, below
    min_size) is main()'s as it returned, not the crash's half-trained one of the run before."""
    write(work, "mylib/__init__.py", "")
    write(work, "mylib/model.py", TRAINER)
    write(work, "train.py", TRAIN)
    crashed = python(["train.py"], env, work)
    assert crashed.returncode == 1 and "bug in epoch 5" in crashed.stderr
    env = dict(env, FIXED="1")
    resumed = chkpt(["resume", "train.py"], env, work)
    assert (resumed.returncode, resumed.stdout) == (0, "w 10.0\n"), resumed.stderr
    assert (resumed.stdout, 0) == (python(["train.py"], dict(env, CHKPT="0"), work).stdout, 0)
    shown = chkpt(["show", "latest"], env, work).stdout
    assert "return" in shown and "main()'s locals as it returned: chkpt show" in shown
    loaded = python(["-c", "import chkpt; print(chkpt.load('model').w.tolist())"], dict(env, CHKPT="0"), work)
    assert loaded.stdout == "[10.0, 10.0, 10.0, 10.0]\n", loaded.stderr
