"""What having chkpt installed costs every interpreter start, beside a plain venv.

Two fresh venvs of the running Python: one plain, one with only chkpt installed (`pip install
--no-deps .`: its .pth, .start and chkpt_autoload.py at the root of site-packages). On Python
3.15+ a third has chkpt without the .start file, so that site.py runs the .pth's import line
instead of resolving an entry point (which imports pkgutil and re). `python -c pass` and
`CHKPT=0 python empty.py` run alternately in each, and the medians are compared: wall time,
and CPU time (user + system of the child, which other jobs on the machine disturb less).

    python benchmarks/bench_startup.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_venv(path: Path, with_chkpt: bool, start_file: bool = True) -> str:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = str(path / "bin" / "python")
    if with_chkpt:
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", purelib, str(REPO)],
                       check=True, stdout=subprocess.DEVNULL)
        if not start_file:
            os.remove(os.path.join(purelib, "chkpt_autoload.start"))
        subprocess.run([python, "-m", "compileall", "-q", purelib], check=True, stdout=subprocess.DEVNULL)
    return python


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        venvs = {"plain": make_venv(Path(work, "plain"), False), "chkpt": make_venv(Path(work, "chkpt"), True)}
        if sys.version_info >= (3, 15):
            venvs["chkpt, no .start"] = make_venv(Path(work, "nostart"), True, start_file=False)
        Path(work, "empty.py").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHKPT")}
        cases = {"python -c pass": (["-c", "pass"], env),
                 "CHKPT=0 python empty.py": (["empty.py"], {**env, "CHKPT": "0"})}
        print(f"Python {sys.version.split()[0]}, medians of {args.repeat} alternated runs")
        for label, (argv, case_env) in cases.items():
            times: dict[str, list[float]] = {name: [] for name in venvs}
            cpu: dict[str, list[float]] = {name: [] for name in venvs}
            for _ in range(args.repeat):
                for name, python in venvs.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    subprocess.run([python, *argv], env=case_env, cwd=work, check=True)
                    times[name].append(time.perf_counter() - start)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            for kind, found in (("wall", times), ("CPU", cpu)):
                base = statistics.median(found["plain"])
                cells = ", ".join(f"{name} {statistics.median(t) * 1000:.2f} ms ({statistics.median(t) / base:.3f}x)"
                                  for name, t in found.items())
                print(f"{label}, {kind}: {cells}")


if __name__ == "__main__":
    main()
