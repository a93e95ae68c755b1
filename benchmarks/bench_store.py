"""Store benchmarks, each figure beside its plain-Python baseline.

- main-thread pause of a 1 GiB checkpoint (target ≤ 0.25 s; plain Python pauses 0 s):
  the first checkpoint of a process, and one where all the data changed (the usual case);
- new bytes written by a checkpoint of unchanged data (target 0);
- the pause of a re-run's first checkpoint, whose data an earlier run stored: each stored chunk
  is read back and its hash checked the first time a process would reuse it (a damaged one is
  written again), beside the same checkpoint once verified (what reuse costs without the check);
- write throughput: 1 GiB of new data from the checkpoint's start to its commit, against
  `numpy.save` of the same arrays to the same disk (target ≥ 0.5x).

Runs a real script under chkpt (this interpreter, autoload .pth installed) in a temporary
store next to the numpy.save files. `--hashes` also measures the hash candidates on a 512 MiB
array (docs/store-format.md). Takes about a minute.

    python benchmarks/bench_store.py [--gib 1] [--dir /tmp] [--hashes]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

WORKLOAD = """
import json, os, sys, time
import numpy as np
import chkpt
from chkpt import watch

total, save_dir = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
arrays = [rng.random(total // 4 // 8) for _ in range(4)]   # four arrays, `total` bytes


def snapshot(label):
    os.sync()                           # every figure starts with no dirty pages to flush
    start = time.perf_counter()
    chkpt.snapshot(label)
    pause = time.perf_counter() - start
    job = watch.active()._writer._job
    if job is not None:
        job.wait()                      # committed: the next figure starts from a quiet writer
    return pause, time.perf_counter() - start


def numpy_save():
    os.sync()
    start = time.perf_counter()
    for i, a in enumerate(arrays):
        np.save(os.path.join(save_dir, f"a{i}.npy"), a)
    seconds = time.perf_counter() - start
    for i in range(4):
        os.unlink(os.path.join(save_dir, f"a{i}.npy"))
    return seconds


results = {}
results["first_pause"], results["first_total"] = snapshot("first")
results["unchanged_pause"], _ = snapshot("unchanged")
if len(sys.argv) > 3:                   # a re-run of the same data: its first checkpoint verifies
    print(json.dumps(results))
    sys.exit(0)
pauses, totals, saves = [], [], []
for round in range(3):                  # alternated, so the disk's mood hits both alike
    for a in arrays:
        a += 1.0                        # every byte changes
    pause, total = snapshot("changed" if round == 0 else f"changed {round}")
    pauses.append(pause)
    totals.append(total)
    saves.append(numpy_save())
results["changed_pause"] = sorted(pauses)[1]
results["changed_total"] = sorted(totals)[1]
results["npsave"] = sorted(saves)[1]
print(json.dumps(results))
"""


def measure_hashes() -> None:
    import hashlib
    import statistics

    import numpy as np
    import xxhash

    view = memoryview(np.random.default_rng(0).random(64 << 20)).cast("B")  # 512 MiB
    candidates = {
        "hashlib.sha256": lambda: hashlib.sha256(view).digest(),
        "hashlib.blake2b": lambda: hashlib.blake2b(view).digest(),
        "xxhash.xxh3_64": lambda: xxhash.xxh3_64_hexdigest(view),
        "xxhash.xxh3_128": lambda: xxhash.xxh3_128_hexdigest(view),
    }
    try:
        import blake3

        candidates["blake3 (1 thread)"] = lambda: blake3.blake3(view).digest()
        candidates["blake3 (all threads)"] = lambda: blake3.blake3(view, max_threads=-1).digest()
    except ImportError:
        print("(blake3 not installed: pip install blake3 to include it)")
    print("hash throughput on a 512 MiB array (median of 3):")
    for name, run in candidates.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(f"  {name:22s} {view.nbytes / statistics.median(times) / 1e9:6.2f} GB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB")
    parser.add_argument("--dir", default=None, help="where the store and numpy.save files go")
    parser.add_argument("--hashes", action="store_true", help="also measure hash candidates")
    args = parser.parse_args()
    if args.hashes:
        measure_hashes()
    total = int(args.gib * (1 << 30))
    base = tempfile.mkdtemp(prefix="chkpt-bench-", dir=args.dir)
    try:
        work = os.path.join(base, "work")
        os.makedirs(work)
        with open(os.path.join(work, "workload.py"), "w") as handle:
            handle.write(textwrap.dedent(WORKLOAD))
        env = dict(os.environ, CHKPT_DIR=os.path.join(base, "store"), CHKPT_INTERVAL="1h",
                   CHKPT_MAX_STORE_SIZE="100GiB", CHKPT_MAX_RUN_SIZE="100GiB",
                   CHKPT_MAX_CHECKPOINT_SIZE="100GiB", CHKPT_MAX_OBJECT_SIZE="100GiB")
        env.pop("CHKPT", None)
        done = subprocess.run([sys.executable, "workload.py", str(total), work], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        r = json.loads(done.stdout)
        again = subprocess.run([sys.executable, "workload.py", str(total), work, "rerun"], cwd=work, env=env,
                               capture_output=True, text=True, timeout=900)
        if again.returncode != 0:
            print(again.stderr, file=sys.stderr)
            return 1
        rerun = json.loads(again.stdout)
        manifests = []
        runs = os.path.join(base, "store", "runs")
        for run in os.listdir(runs):
            folder = os.path.join(runs, run, "checkpoints")
            for name in sorted(os.listdir(folder)):
                with open(os.path.join(folder, name)) as handle:
                    manifests.append(json.load(handle))
        new = {m["label"]: m["new_bytes"] for m in manifests if m["label"] in ("unchanged", "changed")}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    gib = total / (1 << 30)
    print(f"store benchmark: {gib:g} GiB of float64 arrays in 4 arrays; plain Python = no chkpt")
    print(f"{'figure':52s} {'plain':>9s} {'chkpt':>9s} {'ratio':>8s}  target")
    print(f"{'main-thread pause, first checkpoint (s)':52s} {0:9.3f} {r['first_pause']:9.3f} "
          f"{r['first_pause'] / 0.25:7.2f}x  ≤ 0.25 s (ratio to the target)")
    print(f"{'main-thread pause, all data changed (s)':52s} {0:9.3f} {r['changed_pause']:9.3f} "
          f"{r['changed_pause'] / 0.25:7.2f}x  ≤ 0.25 s (ratio to the target)")
    print(f"{'main-thread pause, unchanged data (s)':52s} {0:9.3f} {r['unchanged_pause']:9.3f}")
    print(f"{'main-thread pause, re-run: stored data verified (s)':52s} {0:9.3f} {rerun['first_pause']:9.3f} "
          f"{rerun['first_pause'] / 0.25:7.2f}x  ≤ 0.25 s (ratio to the target)")
    print(f"{'  the same data once verified (s)':52s} {0:9.3f} {rerun['unchanged_pause']:9.3f} "
          f"{rerun['first_pause'] / max(rerun['unchanged_pause'], 1e-9):7.2f}x  (the check's cost)")
    print(f"{'new bytes written, unchanged checkpoint':52s} {'-':>9s} {new['unchanged']:9d} "
          f"{'':8s}  0")
    print(f"{'new bytes written, changed checkpoint':52s} {'-':>9s} {new['changed']:9d}")
    for label, seconds in (("first", r["first_total"]), ("changed", r["changed_total"])):
        print(f"{f'write throughput, {label} checkpoint (GB/s) vs numpy.save':52s} "
              f"{total / r['npsave'] / 1e9:9.2f} {total / seconds / 1e9:9.2f} "
              f"{r['npsave'] / seconds:7.2f}x  ≥ 0.5x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
