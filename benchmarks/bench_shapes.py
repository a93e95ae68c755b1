"""Real data shapes: what a checkpoint costs for each, beside what a user would do instead.

Shapes: a frame of `--rows` rows with two string columns (pandas' string dtype, then the same
as object columns, as older pandas made them), a list of `--records` record dicts,
and a float64 array of `--gib` GiB with one row changed, then 1 % rows appended. For each,
in one run of a real script under chkpt (this interpreter, autoload .pth installed): the
main-thread pause of its first, unchanged and changed checkpoints, the bytes each wrote, the
stored size against the raw size, and the load time through `chkpt.load`; beside them, in
the same process and on the same disk, `pickle.dumps` / `pickle.loads`, `numpy.save` /
`numpy.load` (arrays) and Parquet via pyarrow (frames). The disk's speed on a VM varies from
one minute to the next: compare figures of one run only.

    python benchmarks/bench_shapes.py [--rows 3000000] [--records 1000000] [--gib 1] [--dir /tmp]
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
import json, os, pickle, sys, time
import numpy as np
import pandas as pd
import chkpt
from chkpt import watch

rows, count, size, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
figures = {}


def timed(action):
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def snapshot(label):
    os.sync()
    start = time.perf_counter()
    chkpt.snapshot(label)
    pause = time.perf_counter() - start
    job = watch.active()._writer._job
    if job is not None:
        job.wait()
    figures[label] = pause


def alternatives(name, value, parquet=None, array=None):
    stream = None
    def dump():
        nonlocal stream
        stream = pickle.dumps(value, protocol=5)
    figures[name + " pickle.dumps"] = timed(dump)
    figures[name + " pickle.loads"] = timed(lambda: pickle.loads(stream))
    if parquet is not None:
        path = os.path.join(out, "frame.parquet")
        figures[name + " parquet write"] = timed(lambda: parquet.to_parquet(path))
        figures[name + " parquet read"] = timed(lambda: pd.read_parquet(path))
        figures[name + " parquet size"] = os.path.getsize(path)
        os.unlink(path)
    if array is not None:
        path = os.path.join(out, "array.npy")
        os.sync()
        figures[name + " numpy.save"] = timed(lambda: np.save(path, array))
        figures[name + " numpy.load"] = timed(lambda: np.load(path))
        os.unlink(path)


names = np.array([f"customer-{i:06d}" for i in range(50_000)], dtype=object)
frame = pd.DataFrame({"id": np.arange(rows), "name": names[rng.integers(0, 50_000, rows)],
                      "city": names[rng.integers(0, 500, rows)], "amount": rng.random(rows)})


# the global frame's checkpoints: first, unchanged, then one numeric and one string cell
# changed (to values the store does not have yet)
def frame_checkpoints(shape, number, text):
    alternatives(shape, frame, parquet=frame)
    snapshot(f"{shape} first")
    snapshot(f"{shape} unchanged")
    frame.iloc[5, 3] = number
    snapshot(f"{shape} changed")
    frame.iloc[6, 1] = text
    snapshot(f"{shape} string changed")


frame_checkpoints("frame", -1.0, "changed")
frame = frame.astype({"name": object, "city": object})    # the same strings as Python objects
frame_checkpoints("objects", -2.0, "changed again")
del frame

people = [{"id": i, "name": f"user{i}", "score": float(i), "tags": ["a", "b"]} for i in range(count)]
alternatives("records", people)
snapshot("records first")
snapshot("records unchanged")
people[10]["score"] = -1.0
snapshot("records changed")
del people

weights = rng.random((size // 8192, 1024))
alternatives("array", weights, array=weights)
snapshot("array first")
snapshot("array unchanged")
weights[7] += 1.0
snapshot("array changed")
weights = np.concatenate([weights, rng.random((len(weights) // 100, 1024))])
snapshot("array appended")
print(json.dumps(figures))
"""

SHAPES = {"frame": "frame", "objects": "frame", "records": "people", "array": "weights"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where the store and the other files go")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="chkpt-shapes-", dir=args.dir)
    try:
        work = os.path.join(base, "work")
        os.makedirs(work)
        with open(os.path.join(work, "shapes.py"), "w") as handle:
            handle.write(textwrap.dedent(WORKLOAD))
        store = os.path.join(base, "store")
        env = dict(os.environ, CHKPT_DIR=store, CHKPT_INTERVAL="1h", CHKPT_MAX_STORE_SIZE="100GiB",
                   CHKPT_MAX_RUN_SIZE="100GiB", CHKPT_MAX_CHECKPOINT_SIZE="100GiB",
                   CHKPT_MAX_OBJECT_SIZE="100GiB", CHKPT_KEEP="100")
        env.pop("CHKPT", None)
        done = subprocess.run([sys.executable, "shapes.py", str(args.rows), str(args.records),
                               str(int(args.gib * (1 << 30))), work], cwd=work, env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        figures = json.loads(done.stdout)
        report(figures, store)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def report(figures: dict[str, float], root: str) -> None:
    import pandas  # noqa: F401  (imported before the loads are timed, as in the workload)
    import pyarrow  # noqa: F401

    from chkpt import api, records
    from chkpt.store import Store

    store = Store(root)
    [run] = api.all_runs(store)
    by_label = {c.label: c for c in run.checkpoints}
    print("real data shapes (one run; plain = what a user would do instead, same process and disk)")
    for shape, name in SHAPES.items():
        first = by_label[f"{shape} first"]
        entries = [v for v in first.manifest["variables"] if v["name"] == name or v["name"].startswith(name)]
        raw = sum(v["size"] for v in entries)
        stored = sum(records.variable_stored(v) for v in entries)
        start = time.perf_counter()
        api.load(name, run=first.ref, store=store)
        load = time.perf_counter() - start
        dumps = figures[f"{shape} pickle.dumps"]
        print(f"\n{shape}: {raw / 1e6:.1f} MB raw, stored {stored / 1e6:.1f} MB ({stored / raw:.2f}x)")
        for label in ("first", "unchanged", "changed", "string changed", "appended"):
            key = f"{shape} {label}"
            if key in figures:
                written = by_label[key].manifest["new_bytes"]
                print(f"  pause, {label:14s} {figures[key]:8.3f} s   ({figures[key] / dumps:6.3f}x pickle.dumps "
                      f"{dumps:.3f} s)   wrote {written / 1e6:9.1f} MB")
        print(f"  load (chkpt.load)  {load:8.3f} s   pickle.loads {figures[f'{shape} pickle.loads']:.3f} s")
        for other in ("parquet write", "parquet read", "numpy.save", "numpy.load"):
            if f"{shape} {other}" in figures:
                print(f"  {other:18s} {figures[f'{shape} {other}']:8.3f} s")
        if f"{shape} numpy.load" in figures:
            print(f"  load throughput vs numpy.load: {figures[f'{shape} numpy.load'] / load:.2f}x")
        if f"{shape} parquet size" in figures:
            print(f"  parquet size {figures[f'{shape} parquet size'] / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
