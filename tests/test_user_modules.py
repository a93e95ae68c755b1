"""The user's own modules are user code: a package beside the script, an editable install.

Periodic checkpoints reach their functions, crash and SIGTERM checkpoints hold their locals
(qualified by module and function), and config narrows it all to the script alone."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from chkpt.usercode import UserCode
from conftest import CHKPT, PYTHON, chkpt_json, python, run, runs, write

TRAINER = """
    import time
    import numpy as np

    def fit(X, epochs, crash_at=None, report_at=None):
        w = np.zeros(2000)
        for epoch in range(epochs):
            t = time.time()
            while time.time() - t < 0.1:
                pass
            w += X.mean()
            if epoch == report_at:
                print("epoch", epoch, flush=True)
            if epoch == crash_at:
                raise RuntimeError(f"diverged at epoch {epoch}")
        return w
"""

TRAIN = """
    import sys
    import numpy as np
    import {module}

    def main():
        X = np.ones((200, 50))
        crash = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else None
        report = int(sys.argv[2]) if len(sys.argv) > 2 else None
        w = {module}.fit(X, 40, crash, report)
        print(w.sum())

    if __name__ == "__main__":
        main()
"""


def checkpoints(env, work, ref="latest"):
    return chkpt_json(["show", ref], env, work)["checkpoints"]


def names(checkpoint: dict) -> dict[str, str]:
    return {v["name"]: v["scope"] for v in checkpoint["variables"]}


def loaded(env, work, ref: str, name: str) -> str:
    code = f"import chkpt\nprint(repr(chkpt.load({name!r}, run={ref!r})))"
    result = python(["-c", code], env, work)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def package_beside(work: Path) -> None:
    write(work, "mylib/__init__.py", "")
    write(work, "mylib/trainer.py", TRAINER)
    write(work, "train.py", TRAIN.format(module="mylib.trainer"))


def test_a_package_beside_the_script_is_checkpointed_periodically_and_at_its_crash(env, work):
    package_beside(work)
    result = python(["train.py", "25"], {**env, "CHKPT_INTERVAL": "0.5"}, work)
    assert result.returncode == 1 and "diverged at epoch 25" in result.stderr
    taken = checkpoints(env, work)
    periodic = [c for c in taken if c["trigger"] == "periodic"]
    assert periodic, "no periodic checkpoint while mylib.trainer.fit ran"
    for checkpoint in periodic:
        assert (checkpoint["function"], Path(checkpoint["file"]).name) == ("fit", "trainer.py")
        assert names(checkpoint)["mylib.trainer.fit:w"] == "local of mylib.trainer.fit"
    crash = taken[-1]
    assert (crash["trigger"], crash["function"], crash["line"]) == ("crash", "fit", 15)
    assert {"mylib.trainer.fit:w", "mylib.trainer.fit:epoch", "crash"} <= set(names(crash))
    # the qualified names load, from Python and from the CLI
    assert loaded(env, work, "latest@crash", "mylib.trainer.fit:epoch") == "25"
    assert loaded(env, work, "latest@crash", "mylib.trainer.fit:w[0]") == "np.float64(26.0)"
    shown = chkpt_json(["show", "latest@crash", "mylib.trainer.fit:w"], env, work)
    assert shown["values"][0]["saved_as"] == "mylib.trainer.fit:w"
    exported = run([str(Path(PYTHON).parent / "chkpt"), "export", "latest@crash", "mylib.trainer.fit:w",
                    "--to", "out"], env, work)
    assert exported.returncode == 0, exported.stderr
    assert np.load(work / "out" / "mylib.trainer.fit.w.npy")[0] == 26.0


def test_a_crash_in_a_module_function_fixed_in_the_module_resumes_in_the_same_iteration(env, work):
    package_beside(work)
    assert python(["train.py", "1"], env, work).returncode == 1
    fixed = (work / "mylib" / "trainer.py").read_text().replace("if epoch == crash_at:", "if False:")
    (work / "mylib" / "trainer.py").write_text(fixed)  # the fix is in the module
    resumed = run([str(Path(PYTHON).parent / "chkpt"), "resume", "train.py"], env, work)
    assert (resumed.returncode, resumed.stdout) == (0, "80000.0\n"), resumed.stderr
    # inside fit, called by main(): both frames' locals restored, the failed statement run again
    assert "main():X, main():crash, main():report, mylib.trainer.fit():X" in resumed.stderr
    assert ("continuing at line 14 in mylib.trainer.fit(), in the iteration (epoch = 1) of the loop at "
            "line 7, called by main(), called by line 13") in resumed.stderr


def test_sigterm_inside_a_module_function_saves_its_locals(env, work):
    package_beside(work)
    process = subprocess.Popen([PYTHON, "train.py", "-", "3"], cwd=work, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "epoch 3\n"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (-signal.SIGTERM, "", "")
    last = checkpoints(env, work)[-1]
    assert (last["trigger"], last["function"]) == ("signal", "fit")
    assert {"mylib.trainer.fit:w", "mylib.trainer.fit:epoch", "report"} <= set(names(last))
    assert int(loaded(env, work, "latest@signal", "mylib.trainer.fit:epoch")) >= 3
    # the stack names fit's frame, and the checkpoint keeps the module's source (for resume)
    trainer = str(work / "mylib" / "trainer.py")
    assert [(e["function"], e.get("file"), e.get("module")) for e in last["stack"]] == [
        ("<module>", None, None), ("main", None, None), ("fit", trainer, "mylib.trainer")]
    assert set(last["sources"]) == {trainer}


def test_no_event_and_no_tool_id_is_held_between_checkpoints_in_a_module(env, work):
    # spin runs the module's code, main the script's; the probe looks once both have returned
    write(work, "probe_lib.py", """
        import time
        import numpy as np
        import chkpt
        def spin():
            data = np.ones(10_000)
            # twelve intervals at least, and on until a periodic checkpoint has been taken here
            # (at most 2 minutes): periodic checkpoints come and go
            end, deadline = time.monotonic() + 0.6, time.monotonic() + 120
            i = taken = 0
            while (time.monotonic() < end or not taken) and time.monotonic() < deadline:
                i += 1
                data[0] = i
                if i % 1000 == 0:
                    taken = "spin" in [c.function for r in chkpt.runs() for c in r.checkpoints]
    """)
    write(work, "probe.py", """
        import sys, time
        import chkpt, probe_lib
        def main():
            probe_lib.spin()
        main()
        mon = sys.monitoring
        with chkpt.paused():  # no new tick arms anything while we look
            time.sleep(0.01)
            codes = (probe_lib.spin.__code__, main.__code__, sys._getframe().f_code)
            print([mon.get_tool(t) for t in range(6)],
                  {(mon.get_events(t), mon.get_local_events(t, c)) for t in (2, 3, 4, 5) for c in codes})
    """)
    result = python(["probe.py"], {**env, "CHKPT_INTERVAL": "0.05"}, work)
    assert result.stdout == "[None, None, None, None, None, None] {(0, 0)}\n", result.stderr
    assert "spin" in {c["function"] for c in checkpoints(env, work) if c["trigger"] == "periodic"}


def test_a_run_in_main_killed_after_ten_seconds_has_data_at_the_default_interval(env, work):
    # The first checkpoint falls due after 5 s; the module frame sits in main() and runs no
    # line, so the next tick comes 2 s later (not an interval) and arms main and fit. The
    # script is killed once a checkpoint is in (or after 50 s: none at the default interval).
    write(work, "slowlib.py", """
        import os, signal, time
        import numpy as np
        import chkpt
        def fit():
            w = np.arange(100_000.0)
            start = look = time.time()
            taken = False
            while time.time() - start < 50 and not taken:
                w += 1
                if time.time() > look:
                    look = time.time() + 0.1
                    taken = chkpt.runs() != [] and chkpt.runs()[0].checkpoints != []
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    write(work, "slow.py", "import slowlib\ndef main():\n    slowlib.fit()\nmain()\n")
    result = python(["slow.py"], env, work)
    assert result.returncode == -signal.SIGKILL
    [checkpoint] = checkpoints(env, work)
    assert (checkpoint["trigger"], checkpoint["function"]) == ("periodic", "fit")
    assert "slowlib.fit:w" in names(checkpoint)


@pytest.mark.parametrize("narrowing", [{"CHKPT_USER_CODE": "script"},
                                       {"CHKPT_USER_CODE_EXCLUDE": "*/mylib/*"}])
def test_config_narrows_user_code_to_the_script(narrowing, env, work):
    package_beside(work)
    result = python(["train.py", "12"], {**env, "CHKPT_INTERVAL": "0.3", **narrowing}, work)
    assert result.returncode == 1 and result.stderr.endswith("RuntimeError: diverged at epoch 12\n")
    taken = checkpoints(env, work)
    assert all(c["function"] != "fit" for c in taken)
    crash = taken[-1]
    assert (crash["trigger"], crash["function"]) == ("crash", "main")
    assert not [name for name in names(crash) if name.startswith("mylib")]
    assert "X" in names(crash)


def test_an_editable_install_is_user_code_and_a_regular_install_is_not(env, tmp_path, work):
    # A throwaway venv that sees this venv's packages (and chkpt's autoload .pth, through
    # addsitedir) and holds `edlib` twice: as an editable install (a path entry in a .pth,
    # as hatchling and setuptools write it) and, for the second run, copied into site-packages.
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env, tmp_path)
    assert made.returncode == 0, made.stderr
    site = Path(run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    env, tmp_path).stdout.strip())
    write(site, "aaa_dev_venv.pth", f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    project = tmp_path / "project"
    write(project, "src/edlib/__init__.py", "")
    write(project, "src/edlib/core.py", TRAINER)
    write(site, "_editable_impl_edlib.pth", f"{project / 'src'}\n")
    write(work, "train.py", TRAIN.format(module="edlib.core"))

    result = run([str(venv / "bin/python"), "train.py", "9"], {**env, "CHKPT_INTERVAL": "0.1"}, work)
    assert result.returncode == 1 and "diverged at epoch 9" in result.stderr
    taken = checkpoints(env, work)
    assert "edlib.core.fit:epoch" in names(taken[-1])
    assert any(c["function"] == "fit" for c in taken if c["trigger"] == "periodic")

    (site / "_editable_impl_edlib.pth").unlink()
    (project / "src/edlib").rename(site / "edlib")
    result = run([str(venv / "bin/python"), "train.py", "4"], {**env, "CHKPT_INTERVAL": "0.2"}, work)
    assert result.returncode == 1 and "diverged at epoch 4" in result.stderr
    latest = runs(env, work)[0]["id"]
    crash = checkpoints(env, work, latest)[-1]
    assert crash["function"] == "main"
    assert not [name for name in names(crash) if name.startswith("edlib")]


# -- the rule itself, in process ----------------------------------------------------------


def rule(tmp_path: Path, mode: str = "project", include=(), exclude=()) -> UserCode:
    return UserCode({}, str(tmp_path / "train.py"), mode, list(include), list(exclude))


def test_files_outside_the_interpreter_and_site_packages_are_the_users(tmp_path):
    user = rule(tmp_path)
    assert user.file(str(tmp_path / "train.py"))
    assert user.file(str(tmp_path / "mylib" / "trainer.py"))
    assert user.file("/srv/projects/other/src/edlib/core.py")
    assert not user.file(json.__file__)  # the stdlib
    assert not user.file(pytest.__file__)  # this venv's site-packages
    assert not user.file("/opt/elsewhere/lib/python3.12/site-packages/lib/core.py")
    assert not user.file("/usr/lib/python3/dist-packages/lib/core.py")
    assert not user.file(sys.modules["chkpt.usercode"].__file__)  # chkpt, even when editable
    assert not user.file("<frozen runpy>") and not user.file("<string>")


def test_globs_and_the_script_mode_change_what_is_the_users(tmp_path):
    assert rule(tmp_path, "script").file(str(tmp_path / "train.py"))
    assert not rule(tmp_path, "script").file(str(tmp_path / "mylib/trainer.py"))
    assert rule(tmp_path, "script", include=["*/mylib/*"]).file(str(tmp_path / "mylib/trainer.py"))
    assert rule(tmp_path, include=["*/site-packages/pytest/*"]).file(pytest.__file__)
    assert not rule(tmp_path, exclude=["trainer.py"]).file(str(tmp_path / "mylib/trainer.py"))
    both = rule(tmp_path, include=["*/mylib/*"], exclude=["*/mylib/*"])
    assert not both.file(str(tmp_path / "mylib/trainer.py"))  # exclude wins
    assert rule(tmp_path, exclude=["*.py"]).file(str(tmp_path / "train.py"))  # the script always counts


@pytest.mark.parametrize(("module_name", "qualifier"), [("mylib.trainer", "mylib.trainer.Trainer.fit"),
                                                        ("odd name[", "trainer.Trainer.fit")])
def test_a_module_functions_locals_are_qualified_and_never_take_a_globals_name(module_name, qualifier):
    from chkpt import capture

    main_globals = {"w": "the script's"}
    module = {"__name__": module_name}
    source = "class Trainer:\n    def fit(self, w, look):\n        epoch = 3\n        return look()\n"
    exec(compile(source, "/project/mylib/trainer.py", "exec"), module)
    roots = module["Trainer"]().fit("fit's", lambda: capture.named_roots(main_globals, [sys._getframe(1)], {}))
    named = {name: (value, scope) for name, value, scope in roots}
    assert named["w"] == ("the script's", "global")
    assert named[f"{qualifier}:w"] == ("fit's", f"local of {qualifier}")
    assert named[f"{qualifier}:epoch"][0] == 3


LOGGING_TRAINER = """
    import time
    import numpy as np

    def note(epoch):
        with open("epochs.log", "a") as log:
            print(epoch, file=log)

    {decorator}def fit(X, epochs, report_at=None):
        w = np.zeros(2000)
        for epoch in range(epochs):
            note(epoch)
            t = time.time()
            while time.time() - t < 0.1:
                pass
            w += X.mean() * epoch
            if epoch == report_at:
                print("epoch", epoch, flush=True)
        return w
"""

ALIASED_TRAIN = """
    import numpy as np
    from mylib import trainer

    def main():
        X = np.ones((200, 50))
        w = trainer.fit(X, 40, 3)
        print(w.sum())

    if __name__ == "__main__":
        main()
"""


def preempted_at_epoch_3(env, work, decorator: str = "") -> None:
    """Run train.py (main() calls mylib.trainer.fit, which logs each epoch it runs) and SIGTERM
    it once epoch 5 has begun (in its 0.1 s of work, most likely)."""
    write(work, "mylib/__init__.py", "")
    write(work, "mylib/trainer.py", LOGGING_TRAINER.format(decorator=decorator))
    write(work, "train.py", ALIASED_TRAIN)
    process = subprocess.Popen([PYTHON, "train.py"], cwd=work, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "epoch 3\n"
    while len(epochs_run(work)) < 6:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.communicate(timeout=60)[1] == "" and process.returncode == -signal.SIGTERM


def epochs_run(work: Path) -> list[int]:
    return [int(line) for line in (work / "epochs.log").read_text().split()]


def test_sigterm_inside_a_module_function_resumes_in_that_iteration_of_its_loop(env, work):
    preempted_at_epoch_3(env, work)
    before = epochs_run(work)
    resumed = run([str(Path(PYTHON).parent / "chkpt"), "resume", "train.py"], env, work)
    # the rest of an uninterrupted run's output (it printed "epoch 3" before the SIGTERM)
    assert (resumed.returncode, resumed.stdout) == (0, "1560000.0\n"), resumed.stderr
    assert "mylib.trainer.fit():w" in resumed.stderr and "runs again from its start" not in resumed.stderr
    said = re.search(r"continuing at line (\d+) in mylib\.trainer\.fit\(\), in the iteration \(epoch = (\d+)\) "
                     r"of the loop at line 11, called by main\(\), called by line 10", resumed.stderr)
    assert said, resumed.stderr
    # the interrupted epoch goes on where it was (its note() is run again only if it was running)
    assert int(said[2]) == before[-1] >= 5 and int(said[1]) in (12, 14, 15)
    log = epochs_run(work)
    assert sorted(set(log)) == list(range(40)) and len(log) <= 41  # no earlier epoch ran again


@pytest.mark.parametrize(("decorator", "edit", "why"), [
    ("", ("mylib/trainer.py", "w = np.zeros(2000)", "w = np.zeros(2000) * 1"), "line 10 (w = np.zeros(2000) * 1), "
     "before the resume point, was changed since the run (it was: w = np.zeros(2000)) (--force continues inside "
     "it anyway)"),
    ("", ("train.py", "trainer.fit(X, 40, 3)", "trainer.fit(X, 40, report_at=3)"), "line 7 of main(), which "
     "calls it, was changed since the run, and its saved locals are those of the old call (--force continues "
     "inside it anyway)"),
    ("@staticmethod\n    ", None, "it is decorated"),
])
def test_a_module_function_it_cannot_vouch_for_runs_again_from_its_start(decorator, edit, why, env, work):
    if decorator:
        write(work, "mylib/__init__.py", "")
        write(work, "mylib/trainer.py", LOGGING_TRAINER.format(decorator=""))
    preempted_at_epoch_3(env, work, decorator)
    if edit:
        edited = work / edit[0]
        edited.write_text(edited.read_text().replace(*edit[1:]))
    before = len(epochs_run(work))
    resumed = run([str(Path(PYTHON).parent / "chkpt"), "resume", "train.py"], env, work)
    assert (resumed.returncode, resumed.stdout) == (0, "epoch 3\n1560000.0\n"), resumed.stderr
    assert f"chkpt: mylib.trainer.fit() runs again from its start: {why}\n" in resumed.stderr
    assert "continuing at line 7 in main(), called by line 10" in resumed.stderr
    assert epochs_run(work)[before:] == list(range(40))


def test_show_export_and_the_type_label_find_the_projects_own_classes(env, work):
    """The `chkpt` command runs from its own bin directory: the run says where its code was."""
    write(work, "mylib/__init__.py", "")
    write(work, "mylib/model.py", """
        import numpy as np

        class MLP:
            def __init__(self):
                self.w = np.arange(4000.0)
            def __repr__(self):
                return f"MLP(w.sum()={self.w.sum()})"
    """)
    write(work, "train.py", "from mylib.model import MLP\nmodel = MLP()\nprint(1 // 0)\n")
    assert python(["train.py"], env, work).returncode == 1
    [listed] = runs(env, work)
    rows = chkpt_json(["show", listed["id"]], env, work)["checkpoints"][-1]["variables"]
    assert [(v["name"], v["type"]) for v in rows] == [("model", "mylib.model.MLP"), ("model.w", "numpy.ndarray")]
    shown = run([CHKPT, "show", listed["id"], "model"], env, work)
    assert shown.returncode == 0, shown.stderr
    assert "MLP(w.sum()=7998000.0)" in shown.stdout
    exported = run([CHKPT, "export", listed["id"], "model",
                    "--to", str(work / "out")], env, work)
    assert exported.returncode == 0, exported.stderr
