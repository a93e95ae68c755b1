"""Engine overhead beside plain Python, measured side by side.

Two fresh venvs of the same interpreter with numpy and pandas: one plain, one with chkpt
installed (`pip install .`, so the autoload .pth is live and its bytecode compiled). Each
workload runs alternately in both, many times, and the medians are compared (wall time;
the notes give the ratio of median CPU times too, user + system of every thread, which
other jobs on the machine disturb less). Start-up
(`-c pass`, an empty script) runs 10x as many times, without any config source as a
user who never configured chkpt has it, and once more with one; beside them runs a third
venv whose .pth imports one module that only registers an atexit handler and starts a
sleeping thread (the floor of any autoload with a timer thread). The loop and call
workloads run with checkpoints really being taken (`CHKPT_INTERVAL`, default 0.25 s,
with 8 MB of arrays to save), and also under the seed prototype's approach (global LINE
events with a filename check in the callback) as the reference row; so do the same loop and
calls inside a function of a user module beside the script, called from the script's main().

    python benchmarks/bench_engine.py [--repeat 15] [--interval 0.25] [--markdown]

Run it with the Python to measure (3.12 or 3.13); the venvs are cached in
benchmarks/.venvs/<version>/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
VENVS = REPO / "benchmarks" / ".venvs" / VERSION

WORKLOADS = {
    "import_numpy_pandas": "import numpy\nimport pandas\n",
    "loop_10m": (
        "import numpy as np\nstate = [np.ones(500_000) for _ in range(2)]\n"
        "total = 0\nfor i in range(10_000_000):\n    total += i\n"
    ),
    "calls_1m": (
        "import numpy as np\nstate = [np.ones(500_000) for _ in range(2)]\n"
        "def small(a, b):\n    return a + b\n"
        "total = 0\nfor i in range(1_000_000):\n    total = small(total, i)\n"
    ),
    # the usual shape: the work in main(), whose boundaries periodic checkpoints wait for
    "loop_10m_in_main": (
        "import numpy as np\ndef main():\n    state = [np.ones(500_000) for _ in range(2)]\n"
        "    total = 0\n    for i in range(10_000_000):\n        total += i\n"
        "if __name__ == '__main__':\n    main()\n"
    ),
    "calls_5m_in_main": (
        "import numpy as np\ndef small(a, b):\n    return a + b\n"
        "def main():\n    state = [np.ones(500_000) for _ in range(2)]\n"
        "    total = 0\n    for i in range(5_000_000):\n        total = small(total, i)\n"
        "if __name__ == '__main__':\n    main()\n"
    ),
}

# The same loop and calls inside a function of the user's own module beside the script
# (called from the script's main()); more iterations, as a function's loop runs faster.
USER_MODULE = (
    "def loop(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
    "def small(a, b):\n    return a + b\n"
    "def calls(n):\n    total = 0\n    for i in range(n):\n        total = small(total, i)\n    return total\n"
)
MODULE_WORKLOADS = {
    "module_loop_30m": (
        "import numpy as np\nimport userlib\nstate = [np.ones(500_000) for _ in range(2)]\n"
        "def main():\n    userlib.loop(30_000_000)\nmain()\n"
    ),
    "module_calls_10m": (
        "import numpy as np\nimport userlib\nstate = [np.ones(500_000) for _ in range(2)]\n"
        "def main():\n    userlib.calls(10_000_000)\nmain()\n"
    ),
}
CHECKPOINTED = ("loop_10m", "calls_1m", "loop_10m_in_main", "calls_5m_in_main", *MODULE_WORKLOADS)

SEED_RUNNER = '''
import sys
target = sys.argv[1]
sys.argv = sys.argv[1:]
mon = sys.monitoring
def on_line(code, line):
    if code.co_filename != target:
        return
mon.use_tool_id(5, "seed")
mon.register_callback(5, mon.events.LINE, on_line)
mon.set_events(5, mon.events.LINE)
code = compile(open(target).read(), target, "exec")
exec(code, {"__name__": "__main__", "__file__": target})
'''


def make_venvs() -> tuple[Path, Path]:
    """(plain, with_chkpt) interpreters, built once per Python version."""
    plain, traced = VENVS / "plain", VENVS / "chkpt"
    stamp = VENVS / "stamp"
    want = "".join((REPO / name).read_text() for name in (
        "pyproject.toml", "chkpt_autoload.pth", "chkpt_autoload.start", "src/chkpt_autoload.py")) + "".join(
        p.read_text() for p in sorted((REPO / "src" / "chkpt").glob("*.py")))
    if stamp.exists() and stamp.read_text() == want:
        return plain / "bin" / "python", traced / "bin" / "python"
    shutil.rmtree(VENVS, ignore_errors=True)
    for venv in (plain, traced):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "numpy", "pandas"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([str(traced / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stamp.write_text(want)
    return plain / "bin" / "python", traced / "bin" / "python"


FLOOR_PTH = 'import sys; (sys.argv or [""])[0] in ("", "-c", "-") or __import__("_chkpt_floor")\n'
FLOOR_MODULE = """\
# The least a timer-based autoload can do: be imported, register atexit, start one thread.
import _thread, atexit
atexit.register(int)
_stop = _thread.allocate_lock()
_stop.acquire()
_thread.start_new_thread(_stop.acquire, ())
"""


def make_floor_venv() -> Path:
    """A venv whose .pth imports one module that only registers atexit and starts a
    sleeping thread: the floor of any autoload design with a timer thread."""
    floor = VENVS / "floor"
    python = floor / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(floor)], check=True)
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        (site / "chkpt_floor.pth").write_text(FLOOR_PTH)
        (site / "_chkpt_floor.py").write_text(FLOOR_MODULE)
        subprocess.run([str(python), "-m", "compileall", "-q", str(site / "_chkpt_floor.py")], check=True)
    return python


def timed(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system, every thread) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(variants: dict[str, list[str]], env: dict[str, str], cwd: str, repeat: int,
            cpu: dict[str, float] | None = None) -> dict[str, float]:
    """Median wall time of each variant, run alternately so drift hits all alike; the median
    CPU times go into `cpu` (less disturbed than wall time on a machine others use)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for args in variants.values():  # warm the page cache
        timed(args, env, cwd)
    for _ in range(repeat):
        for name, args in variants.items():
            times[name].append(timed(args, env, cwd))
    if cpu is not None:
        cpu.update({name: statistics.median(c for _, c in values) for name, values in times.items()})
    return {name: statistics.median(w for w, _ in values) for name, values in times.items()}


def count_checkpoints(chkpt_python: Path, env: dict[str, str], cwd: str) -> float:
    chkpt = chkpt_python.parent / "chkpt"
    runs = json.loads(subprocess.run([str(chkpt), "ls", "--json", "-n", "1000"], env=env, cwd=cwd,
                                     capture_output=True, text=True, check=True).stdout)
    return statistics.mean(r["checkpoints"] for r in runs) if runs else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--interval", default="0.25")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    plain, traced = make_venvs()
    floor = make_floor_venv()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        # Start-up is measured as a user without config has it (no config source: the config
        # is not even loaded); the other workloads with a short interval, so checkpoints happen.
        bare_env = {k: v for k, v in os.environ.items() if not k.startswith("CHKPT")}
        bare_env.update(HOME=work, XDG_CONFIG_HOME=f"{work}/config", XDG_CACHE_HOME=f"{work}/cache",
                        CHKPT_DIR=f"{work}/store")
        env = {**bare_env, "CHKPT_INTERVAL": args.interval}
        Path(work, "seed_runner.py").write_text(SEED_RUNNER)
        Path(work, "empty.py").write_text("")
        Path(work, "userlib.py").write_text(USER_MODULE)
        start_up = {
            "python -c pass": (["-c", "pass"], bare_env, ""),
            "script: empty": (["empty.py"], bare_env, "no config source"),
            "script: empty, config set": (["empty.py"], env, "CHKPT_INTERVAL set: config loaded at start"),
        }
        for label, (cmd, run_env, note) in start_up.items():
            medians = compare({"plain": [str(plain), *cmd], "chkpt": [str(traced), *cmd],
                               "floor": [str(floor), *cmd]}, run_env, work, args.repeat * 10)
            floor_note = f"floor {medians['floor'] * 1000:.1f} ms ({medians['floor'] / medians['plain']:.3f}x)"
            rows.append((label, medians["plain"], medians["chkpt"], None, f"{note}; {floor_note}".lstrip("; ")))
        for name, source in {**WORKLOADS, **MODULE_WORKLOADS}.items():
            script = Path(work, f"{name}.py")
            script.write_text(source)
            variants = {"plain": [str(plain), script.name], "chkpt": [str(traced), script.name]}
            if name in CHECKPOINTED:
                variants["seed"] = [str(plain), "seed_runner.py", str(script)]
            shutil.rmtree(f"{work}/store", ignore_errors=True)
            cpu: dict[str, float] = {}
            medians = compare(variants, env, work, args.repeat, cpu)
            note = f"CPU {cpu['chkpt'] / cpu['plain']:.3f}x"
            if name in CHECKPOINTED:
                note += f"; {count_checkpoints(traced, env, work):.1f} checkpoints per run"
            rows.append((f"script: {name}", medians["plain"], medians["chkpt"], medians.get("seed"), note))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, medians of {args.repeat}+ alternated runs, "
          f"CHKPT_INTERVAL={args.interval}")
    header = "| workload | plain | chkpt | ratio | seed prototype | seed ratio | notes |"
    print(header)
    print("|" + "---|" * 7)
    for label, base, ours, seed, note in rows:
        seed_cells = f"{seed * 1000:.1f} ms | {seed / base:.2f}x" if seed else "- | -"
        print(f"| {label} | {base * 1000:.1f} ms | {ours * 1000:.1f} ms | {ours / base:.3f}x | {seed_cells} | {note} |")


if __name__ == "__main__":
    main()
