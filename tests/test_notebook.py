"""Notebooks end to end: real IPython kernels (ipykernel, started by jupyter_client as Jupyter
does: `python -m ipykernel_launcher -f …` of this venv, where chkpt's autoload is installed),
cells run, the kernel killed with SIGKILL, a new kernel restoring; checkout; the off switches;
nothing of chkpt while a cell runs; cell outputs byte for byte against CHKPT=0 (nbclient)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PYTHON, chkpt, chkpt_json, python, write

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from chkpt import api  # noqa: E402
from chkpt.store import Store  # noqa: E402

WAIT = 90.0  # seconds a test waits for a kernel's checkpoint before it fails


class Kernel:
    """One real kernel, as a frontend drives it: cells in, their outputs out."""

    def __init__(self, env: dict[str, str], cwd: Path, notebook: str | None = "analysis.ipynb",
                 kernel_name: str = "python3") -> None:
        env = dict(env, JUPYTER_PLATFORM_DIRS="1")
        if notebook is not None:
            env["JPY_SESSION_NAME"] = str(cwd / notebook)  # what Jupyter Server tells a kernel
        self.manager = jupyter_client.KernelManager(kernel_name=kernel_name)  # python3: this venv's python
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> dict:
        """Run one cell; its stdout, stderr, result and error, as the frontend receives them."""
        out = {"stdout": "", "stderr": "", "result": None, "error": None}

        def collect(message: dict) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind == "execute_result":
                out["result"] = content["data"].get("text/plain")
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"

        reply = self.client.execute_interactive(textwrap.dedent(code), output_hook=collect, timeout=120)
        out["status"] = reply["content"]["status"]
        return out

    def ok(self, code: str) -> str:
        """Run a cell that must succeed; its stdout."""
        out = self.run(code)
        assert out["status"] == "ok" and out["error"] is None, out
        return out["stdout"]

    def wait_captured(self, count: int) -> None:
        """Wait until chkpt has captured the namespace after cell [count] (a cell that changed
        nothing leaves no checkpoint to wait for). Asked by silent requests, which run no cell
        event, so asking changes nothing."""
        deadline = time.monotonic() + WAIT
        out: list[str] = []
        while time.monotonic() < deadline:
            out.clear()
            self.client.execute_interactive("%chkpt status", silent=True, timeout=60,
                                            output_hook=lambda m: out.append(m["content"].get("text", "")))
            if f"last captured after cell [{count}])" in "".join(out):
                return
            time.sleep(0.2)
        raise AssertionError(f"cell [{count}] not captured within {WAIT}s: {out}")

    def kill(self) -> None:
        """SIGKILL, as the OOM killer does: no atexit, no goodbye."""
        process = self.manager.provisioner.process
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.close()

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=False)
        self.manager.cleanup_resources()


@pytest.fixture
def kernels(env, work):
    """Start kernels in `work` with the test's env; all are shut down at the end."""
    started: list[Kernel] = []

    def start(**kwargs) -> Kernel:
        env_given = kwargs.pop("env", env)
        kernel = Kernel(env_given, work, **kwargs)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        try:
            kernel.close()
        except Exception:
            pass


def notebook_runs(env: dict[str, str]) -> list[api.Run]:
    store = Store(env["CHKPT_DIR"])
    return [run for run in api.all_runs(store) if run.notebook] if store.exists() else []


def wait_for_cell(env: dict[str, str], count: int, run_id: str | None = None) -> api.Checkpoint:
    """The checkpoint holding the state after cell [count] of the newest kernel run, once committed."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for run in notebook_runs(env):
            if run_id is None or run.id == run_id:
                for checkpoint in run.checkpoints:
                    if checkpoint.cell == count:
                        return checkpoint
                break
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after cell [{count}] within {WAIT}s: {notebook_runs(env)}")


CELLS = [
    "import numpy as np\nimport pandas as pd\nfrom collections import OrderedDict",
    "rng = np.random.default_rng(0)\nprices = rng.normal(100, 5, size=(200_000, 4))\n"
    "df = pd.DataFrame(prices, columns=['open', 'high', 'low', 'close'])",
    "df['mid'] = (df.high + df.low) / 2\nthreshold = 101.5\nlabel = 'run one'\n"
    "settings = {'k': 3, 'names': ['a', 'b']}",
    "def normalise(frame):\n    return frame / frame.std()\n\n"
    "class Model:\n    def __init__(self, w):\n        self.w = w\n"
    "    def predict(self, x):\n        return x @ self.w\n\n"
    "model = Model(rng.normal(size=4))\nsquare = lambda v: v * v\npending = (v * v for v in range(3))",
    "results = {'train': df.iloc[:1000].copy(), 'scores': np.arange(500.0)}\nsame = df\nordered = OrderedDict(a=1)",
    "from dataclasses import dataclass\nfrom collections import namedtuple\nclass C:\n    a: int\n"
    "DC = dataclass(C)\ndata = DC(0)\nPoint = namedtuple('Point', 'x y')\nwhere = Point(1, 2)",
]
# the same values, recomputed in a kernel that never ran CELLS, for comparing
EXPECTED = """
import numpy as np, pandas as pd
_rng = np.random.default_rng(0)
_df = pd.DataFrame(_rng.normal(100, 5, size=(200_000, 4)), columns=['open', 'high', 'low', 'close'])
_df['mid'] = (_df.high + _df.low) / 2
_w = _rng.normal(size=4)
"""
CHECK = """
assert df.equals(_df), 'df'
assert results['train'].equals(_df.iloc[:1000]) and (results['scores'] == np.arange(500.0)).all(), 'results'
assert same is df, 'same'
assert (threshold, label, settings) == (101.5, 'run one', {'k': 3, 'names': ['a', 'b']}), 'small values'
assert type(model).__name__ == 'Model' and type(model).__module__ == '__main__' and (model.w == _w).all(), 'model'
assert np.allclose(model.predict(np.ones(4)), _w.sum()), 'method'
assert normalise(df).shape == df.shape, 'function'
assert rng.normal() == np.random.default_rng(0).normal(size=(200_000 * 4 + 4 + 1))[-1], 'generator state'
assert ordered == {'a': 1} and type(ordered).__name__ == 'OrderedDict', 'imported class'
assert data == DC(0) and repr(data) == 'C(a=0)', 'a dataclass made by a call'
assert where == Point(1, 2) and where.y == 2, 'a namedtuple made by an assignment'
print('all equal')
"""


def killed_after_cells(kernels, env) -> api.Run:
    """A kernel that ran CELLS, killed with SIGKILL once the state after the last was saved."""
    first = kernels()
    for cell in CELLS:
        first.ok(cell)
    wait_for_cell(env, len(CELLS))
    first.kill()
    [killed] = notebook_runs(env)
    return killed


def test_a_killed_kernels_state_comes_back_in_a_new_kernel(kernels, env, work):
    killed = killed_after_cells(kernels, env)
    assert killed.status == "killed" and os.path.basename(killed.script) == "analysis.ipynb"

    second = kernels()
    out = second.ok("%chkpt restore")
    assert f"from {killed.id}@" in out and "after cell [6]" in out
    assert "made again: " in out and "normalise" in out and "Model" in out and "np" in out
    # what could not be saved is listed with the cell that defined it
    assert "pending  a generator cannot be saved" in out and "(cell [4]: def normalise(frame):" in out
    second.ok(EXPECTED)
    assert second.ok(CHECK) == "all equal\n"
    assert second.run("pending")["error"] == "NameError: name 'pending' is not defined"
    assert second.ok("print(square(3))") == "9\n"  # pickle refuses a lambda; cloudpickle saves it


def test_restore_through_the_api_in_a_kernel_that_chkpt_does_not_watch(kernels, env, work):
    killed_after_cells(kernels, env)
    second = kernels(env=dict(env, CHKPT="0"))
    out = second.ok("import chkpt\nrestored = chkpt.restore()\nprint(restored)")
    assert "restored " in out and "after cell [6]" in out
    second.ok(EXPECTED)
    assert second.ok(CHECK) == "all equal\n"
    assert len(notebook_runs(env)) == 1  # CHKPT=0: the second kernel is not checkpointed


def run_saved(kernel: Kernel, env: dict[str, str], cells: list[str]) -> None:
    """Run `cells` one by one, each once the state after the one before is saved."""
    for count, cell in enumerate(cells, start=1):
        kernel.ok(cell)
        wait_for_cell(env, count)


def test_checkout_gives_the_state_after_any_checkpointed_cell(kernels, env, work):
    kernel = kernels()
    run_saved(kernel, env, ["import numpy as np\nw = np.zeros(1000)", "w += 1\nstep = 1",
                            "w += 1\nstep = 2\nlater = np.ones(10)"])
    out = kernel.ok("%chkpt checkout 2")
    assert "checked out" in out and "after cell [2]" in out and "removed (made after that cell): later" in out
    assert kernel.ok("print(w.sum(), step, 'later' in dir())") == "1000.0 1 False\n"
    # the state it replaced was saved: checking out cell 3 brings it back
    kernel.ok("import chkpt\nprint(chkpt.checkout(3))")
    assert kernel.ok("print(w.sum(), step, later.sum())") == "2000.0 2 10.0\n"
    # a cell that never ran, and bad arguments: one chkpt line, no traceback
    out = kernel.run("%chkpt checkout 99")
    assert out["status"] == "ok" and out["stderr"].startswith("chkpt: cell [99] has no checkpoint")
    out = kernel.run("%chkpt frobnicate")
    assert out["stderr"].startswith("chkpt: cannot understand 'frobnicate'") and "usage: %chkpt" in out["stderr"]


def test_checkout_in_a_new_kernel_reaches_the_cells_of_the_kernel_it_restored(kernels, env, work):
    first = kernels()
    run_saved(first, env, ["import numpy as np\nw = np.arange(1000.0)", "w *= 2"])
    first.kill()
    second = kernels()
    second.ok("%chkpt restore")
    second.ok("w += 1")
    # cell [1] of this kernel is the restore: its state is the first kernel's last
    out = second.ok("%chkpt checkout 1")
    assert "after cell [1]" in out and "made again: np" in out
    assert second.ok("print(w.sum())") == f"{2 * sum(range(1000))}.0\n"
    # the first kernel's cell [1], by naming its run
    [_, killed] = notebook_runs(env)
    out = second.ok(f"%chkpt checkout 1 --run {killed.id}")
    assert f"from {killed.id}@1 " in out
    assert second.ok("print(w.sum())") == f"{sum(range(1000))}.0\n"


def test_a_cell_that_changed_nothing_takes_no_checkpoint_and_unchanged_data_costs_nothing(kernels, env, work):
    kernel = kernels()
    kernel.ok("import numpy as np, pandas as pd\nframe = pd.DataFrame({'x': np.arange(2_000_000.0)})")
    first = wait_for_cell(env, 1)
    kernel.ok("print(frame.x.mean())")  # reads only
    kernel.wait_captured(2)
    kernel.ok("frame.loc[0, 'x'] = -1.0")
    changed = wait_for_cell(env, 3, first.run.id)
    run = notebook_runs(env)[0]
    assert [c.cell for c in run.checkpoints] == [1, 3]
    assert changed.manifest["new_bytes"] < 5 << 20  # one chunk of the 16 MB column, not the column
    # the read-only cell's state is the first checkpoint's: checkout finds it there
    out = kernel.ok("%chkpt checkout 2")
    assert f"{first.ref}" in out
    assert kernel.ok("print(frame.x[0])") == "0.0\n"


def test_chkpt_0_and_the_config_switch_it_off(kernels, env, work):
    off = kernels(env=dict(env, CHKPT="0"))
    off.ok("import numpy as np\nw = np.ones(100_000)")
    assert off.ok("import sys\nprint('chkpt' in sys.modules)") == "False\n"
    out = off.run("%chkpt status")
    assert out["status"] == "error" and "`%chkpt` not found" in out["stderr"], out  # chkpt was never loaded
    out = off.run("%load_ext chkpt")
    assert out["stderr"] == "chkpt: checkpoints are off in this kernel (CHKPT=0); %chkpt restore and checkout work\n"
    assert off.ok("%chkpt status").startswith("chkpt: this kernel is not checkpointed")
    write(work, "chkpt.toml", "notebooks = false\n")
    quiet = kernels()
    quiet.ok("import numpy as np\nw = np.ones(100_000)")
    (work / "chkpt.toml").write_text('exclude = ["*.ipynb"]\n')
    excluded = kernels()
    excluded.ok("import numpy as np\nw = np.ones(100_000)")
    (work / "chkpt.toml").unlink()
    watched = kernels()
    watched.ok("import numpy as np\nw = np.ones(100_000)")
    wait_for_cell(env, 1)
    assert len(notebook_runs(env)) == 1


def test_explicit_load_ext_in_a_kernel_the_autoload_did_not_start(kernels, env, work, tmp_path, monkeypatch):
    # a kernel started another way (`python -c …`) is not recognised by the autoload
    spec = tmp_path / "jupyter" / "kernels" / "other-launch"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [PYTHON, "-c", "from ipykernel import kernelapp; kernelapp.launch_new_instance()",
                 "-f", "{connection_file}"], "display_name": "other", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    kernel = kernels(kernel_name="other-launch")
    kernel.ok("import numpy as np\nw = np.ones(100_000)")
    assert kernel.ok("import sys\nprint('chkpt' in sys.modules)") == "False\n"
    assert kernel.ok("%load_ext chkpt") == ""
    kernel.ok("w += 1")
    checkpoint = wait_for_cell(env, 4)
    assert checkpoint.load("w").sum() == 200_000.0
    assert kernel.ok("%load_ext chkpt").startswith("The chkpt extension is already loaded.")


PROBE = """
import sys, threading, os
from ipykernel.kernelapp import IPKernelApp
ids = [sys.monitoring.get_tool(i) for i in range(6)]
events = [sys.monitoring.get_events(i) for i in range(6)]
print(ids, events, sys.gettrace(), sys.getprofile())
print(sorted(t.name for t in threading.enumerate()), threading.active_count(), len(os.listdir('/proc/self/task')))
print([type(f).__name__ for f in sys.meta_path], 'init_extensions' in IPKernelApp.__dict__)
print(len(sys.argv), sorted(k for k in globals() if not k.startswith('_')))
"""


def test_nothing_of_chkpt_runs_while_a_cell_executes(kernels, env, work):
    """A cell sees what it sees in plain IPython: no monitoring tool, trace or profile function,
    no extra thread (the background part of a checkpoint is over before the next cell starts),
    no import hook, ipykernel's classes as they were."""
    seen = []
    for kernel_env in (dict(env, CHKPT="0"), env):
        kernel = kernels(env=kernel_env)
        # integer codes: compressed by chkpt's background thread, which takes a while
        kernel.ok("import numpy as np\ncodes = np.random.default_rng(0).integers(0, 10, 56 << 20, dtype=np.uint8)")
        seen.append(kernel.ok(PROBE))
    assert seen[0] == seen[1]
    wait_for_cell(env, 1)


OUTPUT_CELLS = [
    "import numpy as np, pandas as pd, sys, warnings\nprint('hello')\nprint('to stderr', file=sys.stderr)",
    "df = pd.DataFrame({'a': np.arange(5)})\ndf",
    "warnings.warn('careful')\ndf.a.sum()",
    "for i in range(3):\n    print(i, end=' ')",
    "1 / 0",
    "x = np.arange(3)\nx * 2",
    "%time y = x + 1",
    "from IPython.display import display\ndisplay({'k': 1})\ny",
]


def _outputs(notebook: dict) -> list:
    """Each cell's outputs as Jupyter saves them, with what legitimately varies taken out: what
    %time measures, and where a stream's text was cut into messages (ipykernel sends what a cell
    printed every 0.2 s: consecutive pieces of one stream are joined, as frontends show them)."""
    found = []
    for cell in notebook["cells"]:
        outputs: list[dict] = []
        for output in cell.get("outputs", []):
            output = dict(output)
            last = outputs[-1] if outputs else {}
            if output["output_type"] == "stream" and last.get("output_type") == "stream" \
                    and last["name"] == output["name"]:
                last["text"] += output["text"]
                continue
            outputs.append(output)
        for output in outputs:
            if "Wall time" in str(output.get("text", "")):
                output["text"] = "<times>"
        found.append([cell.get("execution_count"), outputs])
    return found


def test_cell_outputs_are_byte_for_byte_those_of_chkpt_0(env, work):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    results = []
    for kernel_env in (dict(env, CHKPT="0"), dict(env)):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in OUTPUT_CELLS])
        client = nbclient.NotebookClient(notebook, kernel_name="python3", allow_errors=True, timeout=120)
        client.execute(env=dict(kernel_env, JUPYTER_PLATFORM_DIRS="1", JPY_SESSION_NAME=str(work / "o.ipynb")),
                       cwd=str(work))
        # a cell's file name holds the kernel's pid (/tmp/ipykernel_1234/…), as in any two kernels
        results.append(re.sub(r"ipykernel_\d+", "ipykernel_PID", json.dumps(_outputs(notebook), sort_keys=True)))
    assert results[0] == results[1]
    assert "ZeroDivisionError" in results[1] and "careful" in results[1]
    assert len(notebook_runs(env)) == 1 and notebook_runs(env)[0].status == "finished"


def test_cli_and_api_on_a_notebooks_runs_beside_a_scripts(kernels, env, work):
    write(work, "prep.py", "import numpy as np\nraw = np.arange(10_000.0)\n")
    assert python(["prep.py"], env, work).returncode == 0
    kernel = kernels()
    run_saved(kernel, env, ["import numpy as np\nloss = np.array([3.0])\nw = np.zeros(2000)",
                            "loss = loss / 2\nw += 1"])
    kernel.close()
    listing = chkpt(["ls"], env, work)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert "analysis.ipynb" in lines[1] and "finished" in lines[1] and "prep.py" in lines[2]
    shown = chkpt(["show", "analysis.ipynb"], env, work).stdout
    assert "notebook /" in shown.replace("notebook ", "notebook /", 1) or "notebook" in shown
    assert "after cell [2]" in shown and "[2] loss = loss / 2 ⏎ w += 1" in shown
    assert "cell [1]" in shown and "cell [2]" in shown
    diff = chkpt(["diff", "analysis.ipynb"], env, work).stdout
    assert "loss" in diff and "w" in diff and "changed" in diff
    history = python(["-c", "import chkpt; h = chkpt.history('loss', script='analysis.ipynb');"
                            "print([float(v[0]) for _, v in h])"], env, work)
    assert history.stdout == "[3.0, 1.5]\n", history.stderr
    exported = chkpt(["export", "analysis.ipynb", "w", "--to", str(work / "out")], env, work)
    assert exported.returncode == 0 and (work / "out" / "w.npy").exists()
    described = chkpt_json(["show", "analysis.ipynb"], env, work)
    assert described["run"]["kind"] == "notebook" and described["checkpoints"][-1]["cells"][-1]["count"] == 2
    resumed = chkpt(["resume", "analysis.ipynb"], env, work)
    assert resumed.returncode == 2 and "%chkpt restore" in resumed.stderr and "Traceback" not in resumed.stderr


def test_a_kernel_that_exits_saves_its_last_changes(kernels, env, work):
    kernel = kernels()
    kernel.ok("import numpy as np\nw = np.zeros(1000)")
    wait_for_cell(env, 1)
    for _ in range(5):  # quickly: the pause rule puts their capture off
        kernel.ok("w += 1")
    kernel.close()  # a shutdown request, as a frontend's "shut down kernel"
    [run] = notebook_runs(env)
    assert run.status == "finished"
    assert run.checkpoint().load("w").sum() == 5000.0


def test_the_kernel_start_imports_nothing_of_chkpt_for_other_programs(env, work):
    """`python -m json.tool` and friends pay the .pth line and the module check only."""
    write(work, "data.json", "[1]")
    out = python(["-X", "importtime", "-m", "json.tool", "data.json"], env, work)
    assert out.returncode == 0
    assert "chkpt.notebook" not in out.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_restore_lists_values_a_new_kernel_cannot_load(kernels, env, work):
    kernel = kernels()
    kernel.ok("import numpy as np\nimport threading\nlock = threading.Lock()\nw = np.ones(10)")
    wait_for_cell(env, 1)
    kernel.kill()
    second = kernels()
    out = second.ok("%chkpt restore")
    assert "lock  " in out and "(cell [1]: import numpy as np …)" in out
    assert second.ok("print(w.sum())") == "10.0\n"
