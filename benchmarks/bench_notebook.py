"""Notebooks: chkpt beside Kishu (PyPI `kishu`, VLDB'25) on the same cells, in real kernels.

Three kernels run each workload's cells, one cell at a time, as a user at a frontend would:
a plain kernel (this venv's Python with CHKPT=0), a chkpt kernel (this venv, where chkpt's
autoload is installed) and a Kishu kernel (its own venv, `init_kishu()` in a first cell that is
not timed). After each cell the client waits until chkpt has captured the namespace (a user's
think time; a capture the pause rule put off until the kernel is idle counts in full), so both
systems save the state after every cell. Then the kernel is killed (SIGKILL) and a new one
restores the last state (`%chkpt restore`; Kishu: `init_kishu()` then `checkout` of the last
commit), then checks out the state after cell 2, and checks the values against the first
kernel's checksums.

Workloads, shaped like Chipmink's synthetic ones: a 1M-row DataFrame mutated cell by cell; one
new 1 MB array per cell; read-only cells over a large frame. Figures: per-cell overhead beside
the plain kernel (mean of the timed cells), storage after the last cell, restore and checkout
time (client round trips), the kernel's peak memory (VmHWM) beside plain.

Compatibility: Kishu's own library cases (`coverage/coverage_test_cases.py` of its sdist, fetched
with pip at benchmark time, never stored in this repository): for each case whose library both
venvs have, declare and modify the object in a kernel, kill it, restore in a new one and compare
with the object rebuilt there (pickle bytes, else repr).

    python benchmarks/bench_notebook.py [--cells 6] [--coverage 40] [--markdown]

Run it with this project's venv Python (.venv/3.12/bin/python); the Kishu venv is made in
benchmarks/.venvs/kishu-<version>/ (pip install kishu==0.3.4 and the libraries the cases need).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from jupyter_client import KernelManager

REPO = Path(__file__).resolve().parent.parent
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
KISHU_VENV = REPO / "benchmarks" / ".venvs" / f"kishu-{VERSION}"
KISHU_VERSION = "0.3.4"
LIBRARIES = ["numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "polars", "pyarrow", "ipykernel",
             "jupyter_client"]
WAIT = 300.0

FRAME = ("import numpy as np, pandas as pd\nrng = np.random.default_rng(0)\n"
         "df = pd.DataFrame(rng.random((1_000_000, 8)), columns=[f'c{i}' for i in range(8)])")
WORKLOADS = {
    "1M-row frame, a column replaced per cell": (FRAME, lambda i: f"df['c{i % 8}'] = df['c{i % 8}'] * 2 + {i}",
                                                 "float(df.to_numpy().sum())"),
    "1M-row frame, rows updated in place per cell": (FRAME, lambda i: f"df.loc[{i * 50_000}:{i * 50_000 + 999}, "
                                                                      f"'c{i % 8}'] = -{i}.0",
                                                     "float(df.to_numpy().sum())"),
    "one new 1 MB array per cell": ("import numpy as np\narrays = {}",
                                    lambda i: f"a{i} = np.random.default_rng({i}).random(131_072)",
                                    "sum(float(v.sum()) for k, v in sorted(globals().items()) "
                                    "if k[:1] == 'a' and k[1:].isdigit())"),
    "read-only cells over a frame": (FRAME, lambda i: ["df.describe()", "df.c0.mean()", "df[df.c1 > 0.5].shape",
                                                       "df.groupby((df.c2 * 10).astype(int)).c3.mean()",
                                                       "df.corr()"][(i - 2) % 5] + "\nNone",
                                     "float(df.to_numpy().sum())"),
}


def kishu_venv() -> Path:
    """Kishu's venv with the same libraries (made once)."""
    python = KISHU_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(KISHU_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"kishu=={KISHU_VERSION}", "setuptools",
                        "setuptools-scm", *LIBRARIES], check=True)
    return python


def kishu_cases(work: Path) -> list:
    """Kishu's compatibility cases, from its sdist (pip download, at benchmark time)."""
    target = work / "sdist"
    subprocess.run([str(kishu_venv()), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "--no-build-isolation", "-d", str(target), f"kishu=={KISHU_VERSION}"], check=True,
                   capture_output=True)
    [archive] = target.glob("kishu-*.tar.gz")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("coverage/coverage_test_cases.py"))
        source = tar.extractfile(member).read().decode()
    namespace: dict = {}
    exec(compile(source, "coverage_test_cases.py", "exec"), namespace)
    return namespace["LIB_COVERAGE_TEST_CASES"]


class Kernel:
    """A kernel of `python`, started the way Jupyter starts one."""

    def __init__(self, python: Path | str, env: dict[str, str], cwd: Path, specs: Path) -> None:
        name = "bench-" + str(abs(hash(str(python))))
        spec = specs / "kernels" / name
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": name, "language": "python"}))
        # Kishu finds its kernel's id in the connection file's name, as Jupyter Server names it
        self.manager = KernelManager(kernel_name=name, connection_file=str(specs / f"kernel-{uuid.uuid4()}.json"))
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.pid = self.manager.provisioner.process.pid

    def run(self, code: str, silent: bool = False) -> tuple[float, str]:
        """Run a cell; (seconds from request to reply, its stdout and errors)."""
        out: list[str] = []

        def collect(message: dict) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                out.append(content["text"])
            elif message["msg_type"] == "error":
                out.append(f"ERROR {content['ename']}: {content['evalue']}\n")

        started = time.perf_counter()
        self.client.execute_interactive(code, silent=silent, output_hook=collect, timeout=WAIT)
        return time.perf_counter() - started, "".join(out)

    def value(self, expression: str) -> str:
        return self.run(f"print({expression})", silent=True)[1].strip()

    def peak_memory(self) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.manager.provisioner.process.wait()
        self.close()

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=True)
        self.manager.cleanup_resources()


def chkpt_capture_cost(kernel: Kernel, count: int) -> float:
    """Wait until chkpt has captured the namespace after cell [count] and committed what it
    wrote; the seconds of that capture if it came after the cell's reply (put off until the
    kernel was idle), else 0."""
    probe = ("import chkpt.notebook.kernel as _k; _s = _k.current(); "
             "print(_s.captured, _s.last_pause, _s.captured_idle, _s.committed)")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        captured, pause, idle, committed = kernel.run(probe, silent=True)[1].split()
        if captured == str(count) and committed == "True":  # a SIGKILL now keeps that checkpoint
            return float(pause) if idle == "True" else 0.0
        time.sleep(0.05)
    raise RuntimeError(f"chkpt did not capture cell [{count}]")


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_workload(name: str, cells: list[str], checksum: str, systems: dict, work: Path, specs: Path) -> dict:
    """Every system on the same cells; the figures of each."""
    results: dict = {}
    for system, (python, env_extra) in systems.items():
        folder = work / f"{abs(hash(name))}-{system}"
        folder.mkdir()
        notebook = folder / "bench.ipynb"
        notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        env = dict(os.environ, **env_extra, JPY_SESSION_NAME=str(notebook), CHKPT_DIR=str(folder / "store"))
        kernel = Kernel(python, env, folder, specs)
        if system == "kishu":
            kernel.run(f"from kishu import init_kishu\ninit_kishu({str(notebook)!r})")
        times, commits = [], []
        for count, cell in enumerate(cells, start=1 + (system == "kishu")):
            seconds, out = kernel.run(cell)
            if "ERROR" in out:
                raise RuntimeError(f"{system}: {out}")
            if system == "chkpt":
                seconds += chkpt_capture_cost(kernel, count)
            elif system == "kishu":
                commits.append(kernel.value("_kishu._kishu_branch.get_head().commit_id"))
            times.append(seconds)
        expected = kernel.value(checksum)
        second_state = None
        figures = {"times": times, "peak": kernel.peak_memory()}
        if system != "plain":
            kernel.kill()
            figures["storage"] = tree_size(folder / "store") + sum(
                f.stat().st_size for f in folder.glob("*.kishudb*"))
            fresh = Kernel(python, env, folder, specs)
            if system == "chkpt":
                figures["restore"], out = fresh.run("%chkpt restore")
                first_run = out.split(" from ")[1].split("@")[0] if " from " in out else "?"
                figures["restored_ok"] = fresh.value(checksum) == expected
                figures["checkout"], out = fresh.run(f"%chkpt checkout 2 --run {first_run}")
            else:
                fresh.run(f"from kishu import init_kishu\ninit_kishu({str(notebook)!r})")
                figures["restore"], out = fresh.run(f"_kishu.checkout({commits[-1]!r}, skip_notebook=True)")
                figures["restored_ok"] = fresh.value(checksum) == expected
                figures["checkout"], out = fresh.run(f"_kishu.checkout({commits[1]!r}, skip_notebook=True)")
            second_state = fresh.value(checksum)
            figures["checkout_ok"] = "ERROR" not in out and second_state != "" and "ERROR" not in second_state
            fresh.close()
        else:
            kernel.close()
        results[system] = figures
    return results


def coverage(cases: list, systems: dict, work: Path, specs: Path, limit: int) -> dict:
    """Kishu's library cases: declared, modified, killed, restored and compared, per system."""
    available = {}
    for system in ("chkpt", "kishu"):
        python = systems[system][0]
        names = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
        available[system] = {p["name"].lower() for p in json.loads(names.stdout)}
    chosen = [c for c in cases if all(c.module_name.lower() in available[s] for s in available)][:limit]
    outcome: dict = {system: {"equal": 0, "restored, not comparable": 0, "listed as not restored": 0,
                              "failed": 0, "case fails here": 0} for system in available}
    outcome["cases"] = len(chosen)
    outcome["modules"] = sorted({c.module_name for c in chosen})
    for number, case in enumerate(chosen):
        body = "\n".join(case.import_statements + case.var_declare_statements)
        modify = "\n".join(case.var_modify_statements)
        rebuild = ("_ns = {}\nexec(" + repr(body + "\n" + modify) + ", _ns)\nimport pickle as _p\n"
                   f"try:\n    _same = _p.dumps({case.var_name}) == _p.dumps(_ns[{case.var_name!r}])\n"
                   f"except Exception:\n    _same = repr({case.var_name}) == repr(_ns[{case.var_name!r}])\n"
                   "print('SAME' if _same else 'DIFFERENT')")
        for system in available:
            python, env_extra = systems[system]
            folder = work / f"case{number}-{system}"
            folder.mkdir()
            notebook = folder / "case.ipynb"
            notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
            env = dict(os.environ, **env_extra, JPY_SESSION_NAME=str(notebook), CHKPT_DIR=str(folder / "store"),
                       MPLBACKEND="agg")
            try:
                kernel = Kernel(python, env, folder, specs)
                if system == "kishu":
                    kernel.run(f"from kishu import init_kishu\ninit_kishu({str(notebook)!r})")
                _, out = kernel.run(body)
                _, out2 = kernel.run(modify)
                if "ERROR" in out + out2:  # the case itself fails here (a dataset to download, say)
                    outcome[system]["case fails here"] += 1
                    kernel.kill()
                    continue
                if system == "chkpt":
                    chkpt_capture_cost(kernel, 2)
                else:
                    last = kernel.value("_kishu._kishu_branch.get_head().commit_id")
                kernel.kill()
                fresh = Kernel(python, env, folder, specs)
                if system == "chkpt":
                    _, restored = fresh.run("%chkpt restore")
                else:
                    fresh.run(f"from kishu import init_kishu\ninit_kishu({str(notebook)!r})")
                    _, restored = fresh.run(f"_kishu.checkout({last!r}, skip_notebook=True)")
                _, compared = fresh.run(rebuild)
                fresh.close()
            except Exception as exc:  # a kernel that would not start or answer
                outcome[system]["failed"] += 1
                print(f"  {case.class_name} ({system}): {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            if "SAME" in compared:
                result = "equal"
            elif f"  {case.var_name}  " in restored:
                result = "listed as not restored"
            elif "DIFFERENT" in compared:
                result = "restored, not comparable"
            else:
                result = "failed"
            outcome[system][result] += 1
            print(f"  {case.class_name} `{case.var_declare_statements[-1]}` ({system}): {result}", file=sys.stderr)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=6,
                        help="cells per workload (the first makes the data; 0: no workloads)")
    parser.add_argument("--coverage", type=int, default=40, help="Kishu library cases to run (0: none)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    kishu = kishu_venv()
    systems = {"plain": (sys.executable, {"CHKPT": "0"}), "chkpt": (sys.executable, {}),
               "kishu": (kishu, {"ENV_KISHU_TEST_MODE": "1", "CHKPT": "0"})}
    work = Path(tempfile.mkdtemp(prefix="bench-notebook-"))
    specs = work / "jupyter"
    os.environ["JUPYTER_PATH"] = str(specs)
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
    os.environ["KISHU_PATH_ROOT"] = str(work)
    rows = []
    try:
        for name, (first, later, checksum) in WORKLOADS.items() if args.cells else ():
            cells = [first] + [later(i) for i in range(2, args.cells + 1)]
            found = run_workload(name, cells, checksum, systems, work, specs)
            plain = found["plain"]
            for system in ("chkpt", "kishu"):
                figures = found[system]
                extra = [t - p for t, p in zip(figures["times"][1:], plain["times"][1:], strict=True)]
                rows.append([name, system, f"{statistics.mean(extra) * 1000:.0f} ms",
                             f"{figures['storage'] / 2**20:.1f} MiB", f"{figures['restore']:.2f} s",
                             f"{figures['checkout']:.2f} s",
                             f"{figures['peak'] / 2**20:.0f} MiB ({figures['peak'] / plain['peak']:.2f}x)",
                             "yes" if figures["restored_ok"] else "NO", "yes" if figures["checkout_ok"] else "NO"])
            print(f"{name}: done", file=sys.stderr)
        headers = ["workload", "system", "per-cell overhead", f"storage after {args.cells} cells", "restore",
                   "checkout cell 2", "peak memory (vs plain)", "restored equal", "checkout ok"]
        if rows:
            print_table(headers, rows, args.markdown)
        if args.coverage:
            found = coverage(kishu_cases(work), systems, work, specs, args.coverage)
            print(f"\nKishu's library cases run: {found['cases']} ({', '.join(found['modules'])})")
            keys = ["equal", "restored, not comparable", "listed as not restored", "failed", "case fails here"]
            print_table(["system", *keys], [[s, *(str(found[s][k]) for k in keys)] for s in ("chkpt", "kishu")],
                        args.markdown)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(headers: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
