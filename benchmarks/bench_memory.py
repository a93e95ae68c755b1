"""Memory benchmark: a training loop whose weights are updated in place, beside plain Python.

For weights of 512 MB and 2 GiB, at the default interval and at 0.5 s, the same script runs
alternately with `CHKPT=0` (plain) and with chkpt (this interpreter, autoload `.pth`
installed). Whole-process figures: peak RSS (from wait4, so the exit checkpoint is
included), wall time, and chkpt's pause per checkpoint (from the manifests). Medians of
`--repeat` alternated runs.

    python benchmarks/bench_memory.py [--repeat 3] [--sizes 512MB,2GiB] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOAD = """
import sys, numpy as np
# random, as trained weights are (equal elements would make every chunk the same blob)
weights = np.random.default_rng(0).random(int(sys.argv[1]) // 8)
for step in range(int(sys.argv[2])):
    weights += 0.001                            # in place, as an optimizer step does
    weights *= 0.999
print(float(weights[0]))
"""

SIZES = {"512MB": 512 * 10**6, "1GiB": 1 << 30, "2GiB": 2 << 30}


def run_once(work: str, env: dict[str, str], size: int, steps: int) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one whole run of the workload."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "workload.py", str(size), str(steps)], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"workload failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss * 1024


def pauses(store: str) -> list[float]:
    found = []
    runs = os.path.join(store, "runs")
    for run in os.listdir(runs) if os.path.isdir(runs) else []:
        folder = os.path.join(runs, run, "checkpoints")
        for name in os.listdir(folder):
            with open(os.path.join(folder, name)) as handle:
                found.append(json.load(handle)["pause"])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="512MB,2GiB")
    parser.add_argument("--steps", type=int, default=12, help="loop steps per run")
    parser.add_argument("--dir", default=None, help="where the store goes")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="chkpt-bench-memory-", dir=args.dir)
    work = os.path.join(base, "work")
    os.makedirs(work)
    with open(os.path.join(work, "workload.py"), "w") as handle:
        handle.write(WORKLOAD)
    plain_env = dict(os.environ, CHKPT="0")
    print(f"memory benchmark: weights updated in place, {args.steps} steps, medians of {args.repeat} "
          "alternated runs; plain = CHKPT=0")
    print(f"{'workload':30s} {'plain RSS':>10s} {'chkpt RSS':>10s} {'ratio':>7s} {'plain s':>8s} "
          f"{'chkpt s':>8s} {'ratio':>7s} {'ckpts':>6s} {'pause/ckpt':>11s}")
    try:
        for label in args.sizes.split(","):
            size = SIZES[label]
            for interval in ("60s", "0.5s"):
                plain, chkpt, taken = [], [], []
                for _ in range(args.repeat):
                    # a fresh store each time: the runs compute the same weights, which a store
                    # that already holds them would not write again
                    store = os.path.join(base, "store")
                    env = dict(os.environ, CHKPT_DIR=store, CHKPT_INTERVAL=interval,
                               CHKPT_MAX_OBJECT_SIZE="100GiB", CHKPT_MAX_CHECKPOINT_SIZE="100GiB",
                               CHKPT_MAX_RUN_SIZE="1TiB", CHKPT_MAX_STORE_SIZE="1TiB")
                    env.pop("CHKPT", None)
                    os.sync()
                    plain.append(run_once(work, plain_env, size, args.steps))
                    os.sync()
                    chkpt.append(run_once(work, env, size, args.steps))
                    taken.extend(pauses(store))
                    shutil.rmtree(store, ignore_errors=True)
                p_wall, p_rss = (statistics.median(x) for x in zip(*plain, strict=True))
                c_wall, c_rss = (statistics.median(x) for x in zip(*chkpt, strict=True))
                print(f"{f'{label}, interval {interval}':30s} {p_rss / 2**20:8.0f} M {c_rss / 2**20:8.0f} M "
                      f"{c_rss / p_rss:6.3f}x {p_wall:8.2f} {c_wall:8.2f} {c_wall / p_wall:6.3f}x "
                      f"{len(taken) / args.repeat:6.1f} {statistics.median(taken):9.3f} s")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
