"""What a program can observe is what plain Python gives it: stdout, stderr, exit status and
the files it writes, byte for byte against CHKPT=0, autoloaded and in explicit mode, while
periodic checkpoints are taken (interval 20 ms): object lifetimes at exit, signals, the
sys.monitoring tool ids, sys.exit, and fork."""

from __future__ import annotations

import re

import pytest

from conftest import PYTHON, run, runs, write

BUSY = """
import numpy as np, time
_data = np.arange(20_000.0)
_t = time.time()
while time.time() - _t < 0.15:
    _data += 1
"""

UNCLOSED_CSV = """
import csv
out = open("out.csv", "w")
rows = csv.writer(out)
for i in range(50):
    rows.writerow([i, i * i, "row"])
"""

CASES = {
    # Object lifetimes at exit: the program's namespace is freed at finalization.
    "unclosed_file_at_exit": UNCLOSED_CSV,
    "unclosed_file_with_sys_exit": UNCLOSED_CSV + "import sys\nsys.exit(2)\n",
    "unclosed_file_with_a_crash": UNCLOSED_CSV + "raise ValueError('boom')\n",
    "unclosed_file_with_keyboard_interrupt": UNCLOSED_CSV + "raise KeyboardInterrupt\n",
    "del_runs": "class D:\n    def __del__(self):\n        print('del ran')\nd = D()\n",
    "weakref_finalize_fires": (
        "import weakref\nclass Box:\n    pass\nbox = Box()\nweakref.finalize(box, print, 'finalized')\n"
    ),
    "finalizer_order": (
        "import atexit, weakref\n"
        "class D:\n    def __init__(self, name):\n        self.name = name\n"
        "    def __del__(self):\n        print('del', self.name)\n"
        "a, b = D('a'), D('b')\nkeep = [D('in a list')]\n"
        "weakref.finalize(a, print, 'finalize a')\natexit.register(print, 'atexit')\n"
    ),
    # No signal footprint: no handler of the program's is called, no wakeup byte is written.
    "sigrtmax_handler_is_never_called": (
        "import signal\ncalls = []\nsignal.signal(signal.SIGRTMAX, lambda *a: calls.append(1))\n"
        "_t = time.time()\nwhile time.time() - _t < 0.3:\n    _data += 1\nprint(len(calls))\n"
    ),
    "wakeup_fd_receives_nothing": (
        "import os, signal\nr, w = os.pipe()\nos.set_blocking(r, False)\nos.set_blocking(w, False)\n"
        "signal.set_wakeup_fd(w)\n_t = time.time()\nwhile time.time() - _t < 0.3:\n    _data += 1\n"
        "try:\n    print(os.read(r, 100))\nexcept BlockingIOError:\n    print('no bytes')\n"
    ),
    # sys.monitoring tool ids: a program gets any of them, at any time.
    "tool_ids_claimed_half_a_second_in": (
        "import sys\n_t = time.time()\nwhile time.time() - _t < 0.5:\n    _data += 1\n"
        "for i in range(6):\n    sys.monitoring.use_tool_id(i, f'mine{i}')\n"
        "print([sys.monitoring.get_tool(i) for i in range(6)])\n"
    ),
    "tool_ids_claimed_by_a_function_at_the_start": (
        "import sys\ndef claim():\n    for i in range(6):\n        sys.monitoring.use_tool_id(i, 'mine')\n"
        "claim()\n_t = time.time()\nwhile time.time() - _t < 0.3:\n    _data += 1\n"
        "print([sys.monitoring.get_tool(i) for i in range(6)])\n"
    ),
    # sys.exit: Python's errors, tracebacks and attributes.
    "sys_exit_with_a_keyword": "import sys\nsys.exit(status=3)\n",
    "sys_exit_with_two_arguments_in_a_function": "import sys\ndef f():\n    sys.exit(1, 2)\nf()\n",
    "sys_exit_without_arguments": "import sys\nsys.exit()\n",
    "sys_exit_names": (
        "import sys\nprint(sys.exit.__name__, sys.exit.__qualname__, sys.exit.__module__)\n"
        "print(sys.exit.__doc__ == sys.__dict__['exit'].__doc__)\n"
    ),
    # Fork: Python's own warning, exactly when Python gives it; no warnings filter touched.
    "fork_without_threads_leaves_the_warning_filters_alone": (
        "import os, warnings\nn = len(warnings.filters)\npid = os.fork()\n"
        "if pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nprint(len(warnings.filters) - n)\n"
    ),
    "fork_leaves_no_tool_id_taken_in_parent_or_child": (
        "import os, sys\ntools = lambda: [sys.monitoring.get_tool(i) for i in range(6)]\n"
        "for _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n        print('child', tools(), flush=True)\n"
        "        os._exit(0)\n    os.waitpid(pid, 0)\n    print('parent', tools())\n"
    ),
    "fork_with_a_user_thread_warns_as_python_does": (
        "import os, threading, warnings\nwarnings.simplefilter('always')\nev = threading.Event()\n"
        "t = threading.Thread(target=ev.wait)\nt.start()\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nev.set()\nt.join()\nprint('done')\n"
    ),
}

FLAGS = {
    "fork_with_a_user_thread_and_warnings_as_errors": ["-W", "error::DeprecationWarning"],
}
CASES["fork_with_a_user_thread_and_warnings_as_errors"] = (
    "import os, threading\nev = threading.Event()\nt = threading.Thread(target=ev.wait)\nt.start()\n"
    "try:\n    pid = os.fork()\nexcept DeprecationWarning as w:\n    print('warned', type(w).__name__)\n"
    "else:\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\nev.set()\nt.join()\nprint('done')\n"
)


def outcome(args: list[str], env: dict[str, str], work) -> tuple[int, str, str, dict[str, bytes]]:
    """Exit status, stdout, stderr (process ids masked) and the files the run wrote, which
    are then removed so that the next run starts from the same directory."""
    result = run(args, env, work)
    written = {}
    for path in sorted(work.iterdir()):
        if path.name != "prog.py" and path.is_file():
            written[path.name] = path.read_bytes()
            path.unlink()
    return result.returncode, result.stdout, re.sub(r"pid=\d+", "pid=N", result.stderr), written


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_outcome_as_plain_python(name, env, work):
    write(work, "prog.py", BUSY + CASES[name])
    flags = FLAGS.get(name, [])
    plain = outcome([PYTHON, *flags, "prog.py"], dict(env, CHKPT="0"), work)
    env["CHKPT_INTERVAL"] = "0.02"
    autoloaded = outcome([PYTHON, *flags, "prog.py"], env, work)
    explicit = outcome([PYTHON, *flags, "-m", "chkpt", "prog.py"], env, work)
    assert autoloaded == plain
    assert explicit == plain
    assert len(runs(env, work)) == 2
