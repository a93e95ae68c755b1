"""The checkpoint engine: when checkpoints are taken, from which frames, and that nothing
runs between them."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conftest import PYTHON, chkpt_json, python, runs, write


def checkpoints(env, work, ref="latest"):
    return chkpt_json(["show", ref], env, work)["checkpoints"]


def loaded(env, work, ref: str, expression: str) -> str:
    """Evaluate `expression` over a checkpoint (as `c`) in a fresh interpreter."""
    code = f"from chkpt import api\nrun, sel = api.resolve({ref!r})\nc = run.checkpoint(sel)\nprint({expression})"
    result = python(["-c", code], env, work)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_no_event_and_no_tool_id_is_held_between_checkpoints(env, work):
    write(work, "probe.py", """
        import sys, time
        import numpy as np
        import chkpt
        data = np.ones(10_000)
        mon = sys.monitoring
        here = sys._getframe().f_code
        # ten intervals at least, and on until a periodic checkpoint is in: they come and go
        end, deadline = time.monotonic() + 0.5, time.monotonic() + 120
        i = taken = 0
        while (time.monotonic() < end or not taken) and time.monotonic() < deadline:
            i += 1
            data[0] = i
            if i % 1000 == 0:
                taken = chkpt.runs() != [] and chkpt.runs()[0].checkpoints != []
        with chkpt.paused():  # no new tick arms anything while we look
            time.sleep(0.01)
            print([mon.get_tool(t) for t in range(6)],
                  [(mon.get_events(t), mon.get_local_events(t, here)) for t in (2, 3, 4, 5)])
    """)
    result = python(["probe.py"], {**env, "CHKPT_INTERVAL": "0.05"}, work)
    assert result.stdout == "[None, None, None, None, None, None] [(0, 0), (0, 0), (0, 0), (0, 0)]\n", result.stderr
    assert [c["trigger"] for c in checkpoints(env, work)][:1] == ["periodic"]


def test_periodic_checkpoints_reach_a_top_level_loop_that_is_already_running(env, work):
    # The loop runs until the store holds 4 periodic checkpoints of this run; the deadline
    # only guards against a hang. They can only come from the loop that is running.
    write(work, "spin.py", """
        import time
        import chkpt
        import numpy as np
        state = np.zeros(1000)
        i = seen = 0
        deadline = look = time.time()
        deadline += 120
        while seen < 4 and time.time() < deadline:
            i += 1
            state[0] = i
            if time.time() > look:
                look = time.time() + 0.05
                seen = sum(c.trigger == "periodic" for c in chkpt.runs()[0].checkpoints) if chkpt.runs() else 0
        print(seen)
    """)
    env["CHKPT_INTERVAL"] = "0.2"
    result = python(["spin.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "4\n"), result.stderr
    periodic = [c for c in checkpoints(env, work) if c["trigger"] == "periodic"]
    assert len(periodic) >= 4
    assert all(c["function"] == "<module>" and 9 <= c["line"] <= 14 for c in periodic)
    # `state` changes at every iteration: the first checkpoint, written straight from memory,
    # may lose it to the next write; later ones copy it during the pause.
    holding = [c for c in periodic if "state" in {v["name"] for v in c["variables"]}]
    assert len(holding) >= len(periodic) - 1 >= 2
    counts = [float(loaded(env, work, f"latest@{c['index']}", "c.load('state')[0]")) for c in holding]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_the_first_tick_after_the_start_counts_as_due(env, work):
    # The session is made by the timer thread at its first tick; that tick must count. With
    # interval 0 no timer starts with the run: the script counts the ticks (calls of the
    # session's on_tick) and the safe points asked of the monitor, then starts the timer itself
    # (interval 0.3 s), waits as long as needed for its first periodic checkpoint, and prints at
    # which tick a safe point was first asked: the first. (How many ticks the checkpoint took
    # depends on the machine's load.)
    write(work, "wait.py", """
        import time
        import numpy as np
        from chkpt import monitor, session, watch
        current = watch.current()
        print(current._timer, current._session)
        ticks, asked = [], []
        on_tick, request = session.Session.on_tick, monitor.Monitor.request_safe_point
        session.Session.on_tick = lambda self, frame: (ticks.append(1), on_tick(self, frame))[1]
        monitor.Monitor.request_safe_point = lambda self, frame: (asked.append(len(ticks)), request(self, frame))[1]
        current.config.interval = 0.3
        current.start_timer()
        data = np.ones(1000)
        deadline = time.time() + 120
        while not current._session or current._session._last_checkpoint < 0:
            if time.time() > deadline:
                break
            time.sleep(0.01)
        print(asked[:1])
    """)
    env["CHKPT_INTERVAL"] = "0"
    result = python(["wait.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "None None\n[1]\n"), result.stderr
    assert [c["trigger"] for c in checkpoints(env, work)][:1] == ["periodic"]


def test_loop_iterations_of_the_script_are_resume_points(env, work):
    # 60 epochs at least, and on until a periodic checkpoint is in from the loop (at most 6000:
    # 2 minutes)
    write(work, "train.py", """
        import time, chkpt
        import numpy as np
        losses = np.zeros(6000)
        def train(epoch):
            t = time.time()
            while time.time() - t < 0.02:
                pass
            return 1.0 / (epoch + 1)
        for epoch in range(6000):
            losses[epoch] = train(epoch)
            if epoch >= 59 and [c for r in chkpt.runs()[:1] for c in r.checkpoints if c.line >= 10]:
                break
    """)
    env["CHKPT_INTERVAL"] = "0.2"
    python(["train.py"], env, work)
    periodic = [c for c in checkpoints(env, work) if c["trigger"] == "periodic"]
    # before the loop (the first tick can fall while numpy is imported), at a top-level statement
    assert all(c["boundary"] == "statement" for c in periodic if c["line"] < 10)
    in_loop = [c for c in periodic if c["line"] >= 10]
    assert in_loop
    for checkpoint in in_loop:
        assert (checkpoint["line"], checkpoint["frame"], checkpoint["boundary"]) == (10, "module", "loop")
        assert checkpoint["resumable"] is True
        assert "epoch" in {v["name"] for v in checkpoint["variables"]}


def test_deep_in_a_function_the_checkpoint_holds_the_locals_of_every_frame(env, work):
    write(work, "deep.py", """
        import time, chkpt
        import numpy as np
        def inner(buf):  # on until a periodic checkpoint has been taken here (at most 2 minutes)
            scratch = buf * 3
            t = time.time()
            while time.time() - t < 120 and "inner" not in [c.function for r in chkpt.runs() for c in r.checkpoints]:
                time.sleep(0.01)
        def outer():
            big = np.ones(3000)
            inner(big * 2)
        outer()
    """)
    env["CHKPT_INTERVAL"] = "0.15"
    python(["deep.py"], env, work)
    in_function = [c for c in checkpoints(env, work) if c["trigger"] == "periodic" and c["function"] == "inner"]
    assert in_function, "no periodic checkpoint while the script sat in a function"
    last = in_function[-1]
    assert (last["function"], last["frame"], last["resumable"]) == ("inner", "function", False)
    names = {v["name"]: v["scope"] for v in last["variables"]}
    assert names["buf"] == "local of inner" and names["scratch"] == "local of inner"
    assert names["big"] == "local of outer"


def test_snapshot_track_and_paused(env, work):
    write(work, "api.py", """
        import time
        import chkpt
        import numpy as np
        data = np.ones(5000)
        settings = {"lr": 0.1}
        chkpt.track(settings, "settings")
        chkpt.snapshot("loaded")
        with chkpt.paused():
            t = time.time()
            while time.time() - t < 0.8:
                data += 1
        print("done")
    """)
    env["CHKPT_INTERVAL"] = "0.1"
    assert python(["api.py"], env, work).stdout == "done\n"
    taken = checkpoints(env, work)
    explicit = [c for c in taken if c["trigger"] == "explicit"]
    assert [(c["label"], c["line"]) for c in explicit] == [("loaded", 8)]
    assert "settings" in {v["name"] for v in explicit[0]["variables"]}  # tracked: saved though tiny
    assert not [c for c in taken if c["trigger"] == "periodic" and 9 <= c["line"] <= 12]


def test_snapshot_and_track_do_nothing_without_chkpt(env, work):
    write(work, "api.py", """
        import chkpt
        chkpt.track([1], "x")
        chkpt.snapshot("s")
        with chkpt.paused():
            print("ok")
    """)
    env["CHKPT"] = "0"
    assert python(["api.py"], env, work).stdout == "ok\n"


def test_sigterm_writes_a_final_checkpoint_and_dies_as_plain_python_would(env, work):
    write(work, "serve.py", """
        import time
        import numpy as np
        model = np.ones(10_000)
        print("ready", flush=True)
        while True:
            model += 1
            time.sleep(0.01)
    """)
    for extra in ({"CHKPT": "0"}, {}):
        process = subprocess.Popen([PYTHON, "serve.py"], cwd=work, env=dict(env, **extra),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "ready\n"
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert (process.returncode, out, err) == (-signal.SIGTERM, "", "")
    (run,) = runs(env, work)
    assert run["status"] == "killed"
    last = checkpoints(env, work)[-1]
    assert (last["trigger"], last["label"]) == ("signal", "SIGTERM")
    assert "model" in {v["name"] for v in last["variables"]}


def test_a_handler_the_script_installs_for_sigterm_stays_in_charge(env, work):
    write(work, "graceful.py", """
        import signal, sys, time
        import numpy as np
        model = np.ones(10_000)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
        print("ready", flush=True)
        while True:
            time.sleep(0.01)
    """)
    process = subprocess.Popen([PYTHON, "graceful.py"], cwd=work, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 7
    (run,) = runs(env, work)
    assert (run["status"], run["exit_code"]) == ("finished", 7)
    assert checkpoints(env, work)[-1]["trigger"] == "exit"


def test_keyboard_interrupt_takes_a_crash_checkpoint_and_the_run_is_interrupted(env, work):
    write(work, "ki.py", "import numpy as np\nx = np.ones(5000)\nraise KeyboardInterrupt\n")
    result = python(["ki.py"], env, work)
    assert result.returncode == -signal.SIGINT
    (run,) = runs(env, work)
    assert (run["status"], run["exception"]) == ("interrupted", "KeyboardInterrupt")
    assert checkpoints(env, work)[-1]["trigger"] == "crash"


def test_exit_status_of_sys_exit_is_recorded(env, work):
    write(work, "bye.py", "import sys\nimport numpy as np\nx = np.ones(5000)\nsys.exit(3)\n")
    assert python(["bye.py"], env, work).returncode == 3
    (run,) = runs(env, work)
    assert (run["status"], run["exit_code"]) == ("finished", 3)


def test_a_crash_in_another_thread_is_checkpointed_and_the_run_goes_on(env, work):
    write(work, "worker.py", """
        import threading
        import numpy as np
        def work(n):
            partial = np.full(4000, n)
            raise ValueError("worker failed")
        t = threading.Thread(target=work, args=(5,), name="w1")
        t.start()
        t.join()
        result = np.ones(4000)
    """)
    python(["worker.py"], env, work)
    taken = checkpoints(env, work)
    crash = next(c for c in taken if c["trigger"] == "crash")
    assert (crash["label"], crash["function"], crash["line"]) == ("thread w1", "work", 6)
    assert {"partial", "n"} <= {v["name"] for v in crash["variables"]}
    assert taken[-1]["trigger"] == "exit"
    assert runs(env, work)[0]["status"] == "finished"


def test_an_internal_failure_switches_chkpt_off_with_one_warning(env, work):
    blocker = work / "not-a-directory"
    blocker.write_text("")
    env["CHKPT_DIR"] = str(blocker / "store")
    write(work, "job.py", "import numpy as np\nx = np.ones(5000)\nprint('fine')\nraise SystemExit(4)\n")
    result = python(["job.py"], env, work)
    assert (result.returncode, result.stdout) == (4, "fine\n")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chkpt: ") and "chkpt is off" in lines[0]


def test_the_line_callback_takes_the_checkpoint_on_the_main_thread_only(env, work):
    # Both threads run the same function of the script; once it is armed, the worker's LINE
    # events are ignored (returning DISABLE there would switch them off for the main thread too).
    # The main thread's call runs until a periodic checkpoint has been taken in it (at most 2
    # minutes), the worker's until the main thread's has returned.
    write(work, "both.py", """
        import threading, time, chkpt
        import numpy as np
        done = threading.Event()
        def work(value, stop):
            mine = np.full(3000, value)
            t, i = time.time(), 0
            while time.time() - t < 120 and not stop(i):
                mine += 0
                i += 1
        def taken_in_work(i):
            return i % 1000 == 0 and "work" in [c.function for r in chkpt.runs()[:1] for c in r.checkpoints]
        worker = threading.Thread(target=work, args=(2.0, lambda i: done.is_set()))
        worker.start()
        work(1.0, taken_in_work)
        done.set()
        worker.join()
    """)
    env["CHKPT_INTERVAL"] = "0.1"
    assert python(["both.py"], env, work).returncode == 0
    in_work = [c for c in checkpoints(env, work) if c["trigger"] == "periodic" and c["function"] == "work"]
    assert in_work
    assert {loaded(env, work, f"latest@{c['index']}", "c.load('mine')[0]") for c in in_work} == {"1.0"}


def test_periodic_checkpoints_go_on_after_a_fork(env, work):
    # The timer thread is stopped for the fork and started again at the script's next line.
    write(work, "forks.py", """
        import os, time
        import chkpt
        import numpy as np
        data = np.ones(5000)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        forked = time.time()
        seen = 0
        deadline = look = time.time()
        deadline += 120
        while seen < 2 and time.time() < deadline:
            data[0] += 1
            if time.time() > look:
                look = time.time() + 0.05
                taken = chkpt.runs()[0].checkpoints if chkpt.runs() else []
                seen = sum(c.trigger == "periodic" and c.time > forked for c in taken)
        print(seen)
    """)
    env["CHKPT_INTERVAL"] = "0.2"
    result = python(["forks.py"], env, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "2\n", "")
    assert len(runs(env, work)) == 1


def test_under_dash_m_the_tool_id_is_free_once_the_module_runs(env, work):
    write(work, "pkg/__init__.py", "")
    write(work, "pkg/claims.py", """
        import sys, time
        import numpy as np
        for i in range(6):  # before there is data: no periodic checkpoint can come first
            sys.monitoring.use_tool_id(i, "mine")
        data = np.ones(5000)
        t = time.time()
        while time.time() - t < 0.3:
            data += 1
        print("claimed all")
    """)
    env["CHKPT_INTERVAL"] = "0.02"
    for args in (["-m", "pkg.claims"], ["-m", "chkpt", "-m", "pkg.claims"]):
        result = python(args, env, work)
        assert (result.returncode, result.stdout, result.stderr) == (0, "claimed all\n", "")
    # with every id taken the ticks are skipped; the exit checkpoint needs none
    assert [r["checkpoints"] for r in runs(env, work)] == [1, 1]


@pytest.mark.parametrize(("since", "interval", "pause", "due"), [
    (30.0, 60.0, 0.0, True),      # half an interval after the last one, which cost nothing
    (29.0, 60.0, 0.0, False),
    (float("inf"), 60.0, 0.0, True),   # the first one
    (0.5, 0.5, 0.01, True),
    (0.5, 0.5, 3.0, False),       # a 3 s pause (a slow disk): none for 60 s after it
    (60.0, 0.5, 3.0, True),
])
def test_periodic_checkpoints_take_at_most_a_small_share_of_the_run(since, interval, pause, due):
    from chkpt.session import periodic_due

    assert periodic_due(since, interval, pause) is due


def test_a_run_killed_after_a_few_seconds_has_its_data_at_the_default_interval(env, work):
    write(work, "slow.py", """
        import os, signal, time, numpy as np, chkpt
        data = np.arange(100_000.0)
        start = look = time.time()
        taken = False
        # the first checkpoint comes after 5 s, not 60 s: killed once it is in, or after 50 s
        while time.time() - start < 50 and not taken:
            data += 1
            if time.time() > look:
                look = time.time() + 0.1
                taken = chkpt.runs() != [] and chkpt.runs()[0].checkpoints != []
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = python(["slow.py"], env, work)
    assert result.returncode == -signal.SIGKILL
    [run] = runs(env, work)
    assert run["status"] == "killed" and run["checkpoints"] >= 1
