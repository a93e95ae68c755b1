"""The data path: stored size and pause of each kind of checkpoint, and the first load after the run.

For compressible data (int64 category codes 0-9) and random data (float64), one array of
`--mb` MB saved by each kind of checkpoint, each in a store of its own:

- first: `chkpt.snapshot` of new data (past memory_budget: written raw during the pause, then
  compressed from the page cache by the background part);
- changed: a snapshot after every element changed in place;
- exit / crash: the checkpoint taken as the script ends or dies (compressed during the pause
  where it halves the data).

Beside them, on the same disk: the raw bytes written to a file (`ndarray.tofile`), `numpy.save`,
and `numpy.save` then the `zstd -1` CLI. Printed: stored bytes (as a ratio to the raw size) and
the pause (as recorded in the manifest: what the program felt, waits included), as a ratio to the
raw write; for exit and crash also the time from the end of the script to the end of the process.
Then the first load in a new process right after the run (`chkpt.load`) against `numpy.load` of
the same bytes. Last, the rmlist shape (a list of 2,000 byte strings of 100 KB beside a 100 MB
blob, 10 items replaced between 11 save points): bytes stored and saving time against
`pickle.dump` of the namespace at each save point to the same disk. Each figure is the least of
`--repeat` rounds (this machine is shared).

    python benchmarks/bench_datapath.py [--mb 400] [--repeat 2] [--dir /tmp] [--no-rmlist]
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

kind, mode, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
data = rng.integers(0, 10, count) if kind == "codes" else rng.random(count)


def settle():
    job = watch.active()._writer._job
    if job is not None:
        job.wait()


if mode == "changed":
    chkpt.snapshot("first")
    settle()
    if kind == "codes":
        np.remainder(data + 1, 10, out=data)
    else:
        data += 1.0
os.sync()                               # no dirty pages of before to flush
if mode in ("first", "changed"):
    start = time.perf_counter()
    chkpt.snapshot(mode)
    felt = time.perf_counter() - start
    settle()
    json.dump({"felt": felt}, open(out, "w"))
else:
    json.dump({"ended": time.time()}, open(out, "w"))
    if mode == "crash":
        raise SystemError("the crash the benchmark asked for")
"""

LOADER = """
import sys, time
import numpy as np
import chkpt

which, run, path = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
data = chkpt.load("data", run=run) if which == "chkpt" else np.load(path)
print(time.perf_counter() - start)
assert data.nbytes == np.load(path, mmap_mode="r").nbytes
"""

BASELINE = """
import os, subprocess, sys, time
import numpy as np

kind, count, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
data = rng.integers(0, 10, count) if kind == "codes" else rng.random(count)
os.sync()
start = time.perf_counter()
data.tofile(os.path.join(where, "raw.bin"))
raw = time.perf_counter() - start
os.unlink(os.path.join(where, "raw.bin"))
os.sync()
start = time.perf_counter()
np.save(os.path.join(where, "data.npy"), data)
save = time.perf_counter() - start
start = time.perf_counter()
subprocess.run(["zstd", "-1", "-q", "-f", os.path.join(where, "data.npy")], check=True)
zstd = time.perf_counter() - start
print(raw, save, save + zstd, os.path.getsize(os.path.join(where, "data.npy.zst")))
os.unlink(os.path.join(where, "data.npy.zst"))
"""

RMLIST = """
import json, os, pickle, sys, time
import numpy as np
import chkpt
from chkpt import watch

where = sys.argv[1]


def settle():  # the checkpoint's background part, waited for (no global refers to chkpt's objects)
    job = watch.active()._writer._job
    if job is not None:
        job.wait()


rng = np.random.default_rng(0)
items = [rng.bytes(100_000) for _ in range(2000)]   # 2,000 byte strings of 100 KB
blob = rng.bytes(100_000_000)                       # and a 100 MB blob beside them
saving = pickling = 0.0
pickled = 0
for point in range(11):
    if point:
        for i in rng.choice(2000, 10, replace=False):
            items[i] = rng.bytes(100_000)           # 10 items replaced between save points
    os.sync()
    start = time.perf_counter()
    chkpt.snapshot(f"point {point}")
    settle()                                        # committed: saving time, background included
    saving += time.perf_counter() - start
    os.sync()
    start = time.perf_counter()
    with open(os.path.join(where, "namespace.pkl"), "wb") as handle:
        pickle.dump({"items": items, "blob": blob}, handle, protocol=5)
    pickling += time.perf_counter() - start
    pickled += os.path.getsize(os.path.join(where, "namespace.pkl"))
os.unlink(os.path.join(where, "namespace.pkl"))
print(json.dumps({"saving": saving, "pickling": pickling, "pickled": pickled}))
"""

MODES = ("first", "changed", "exit", "crash")


def blobs_size(store: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(os.path.join(store, "blobs")) for name in names)


def manifests(store: str) -> list[dict]:
    found = []
    for run in sorted(os.listdir(os.path.join(store, "runs"))):
        folder = os.path.join(store, "runs", run, "checkpoints")
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name)) as handle:
                found.append(json.load(handle))
    return found


def one_run(base: str, kind: str, mode: str, count: int) -> dict[str, float]:
    """One checkpoint of `mode` in a store of its own: its pause, stored bytes, and the first load."""
    store = os.path.join(base, "store")
    shutil.rmtree(store, ignore_errors=True)
    env = dict(os.environ, CHKPT_DIR=store, CHKPT_INTERVAL="1h")
    out = os.path.join(base, "out.json")
    done = subprocess.run([sys.executable, "workload.py", kind, mode, str(count), out], cwd=base, env=env,
                          capture_output=True, text=True, timeout=900)
    ended = time.time()
    if done.returncode != (1 if mode == "crash" else 0):
        raise SystemExit(done.stderr)
    with open(out) as handle:
        facts = json.load(handle)
    trigger = "explicit" if mode in ("first", "changed") else mode
    [taken] = [m for m in manifests(store) if m["trigger"] == trigger and m.get("label", "") in ("", mode)]
    result = {"pause": taken["pause"], "stored": taken["new_bytes"], "disk": blobs_size(store)}
    if "ended" in facts:
        result["exit"] = ended - facts["ended"]
    if mode == "exit":  # each in a new process, one after the other
        for which, key in (("chkpt", "load"), ("numpy", "numpy_load")):
            loaded = subprocess.run([sys.executable, "loader.py", which, taken["run"], os.path.join(base, "data.npy")],
                                    cwd=base, env=dict(env, CHKPT="0"), capture_output=True, text=True, timeout=900)
            if loaded.returncode:
                raise SystemExit(loaded.stderr)
            result[key] = float(loaded.stdout)
    return result


def rmlist(base: str, rounds: int) -> None:
    """The rmlist shape: what 11 save points store and take, against pickling each to the same disk."""
    results = []
    for _ in range(rounds):
        store = os.path.join(base, "store")
        shutil.rmtree(store, ignore_errors=True)
        env = dict(os.environ, CHKPT_DIR=store, CHKPT_INTERVAL="1h", CHKPT_KEEP="0")
        done = subprocess.run([sys.executable, "rmlist.py", base], cwd=base, env=env, capture_output=True,
                              text=True, timeout=900)
        if done.returncode:
            raise SystemExit(done.stderr)
        results.append(dict(json.loads(done.stdout), stored=blobs_size(store)))
    best = {key: min(r[key] for r in results) for key in results[0]}
    print(f"\nrmlist (2,000 x 100 KB + 100 MB, 10 items replaced between 11 save points), least of {rounds}:")
    print(f"  chkpt: {best['stored'] / 2**20:,.0f} MiB stored in {best['saving']:.2f} s; pickle.dump of each save "
          f"point: {best['pickled'] / 2**20:,.0f} MiB in {best['pickling']:.2f} s "
          f"({best['stored'] / best['pickled']:.3f}x the bytes, {best['saving'] / best['pickling']:.2f}x the time)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-rmlist", action="store_true", help="leave out the rmlist shape")
    parser.add_argument("--dir", default=None, help="where the stores and files go (default: a temporary dir)")
    args = parser.parse_args()
    count = args.mb * 1_000_000 // 8
    size = count * 8
    base = tempfile.mkdtemp(prefix="chkpt-datapath-", dir=args.dir)
    try:
        for name, text in (("workload.py", WORKLOAD), ("loader.py", LOADER), ("baseline.py", BASELINE),
                           ("rmlist.py", RMLIST)):
            with open(os.path.join(base, name), "w") as handle:
                handle.write(textwrap.dedent(text))
        print(f"{args.mb} MB, least of {args.repeat} rounds; ratios: stored/raw size, pause/raw write")
        print(f"{'data':7s} {'checkpoint':16s} {'stored MB':>10s} {'stored':>7s} {'pause s':>8s} "
              f"{'pause':>7s} {'exit s':>7s}")
        for kind in ("codes", "random"):
            runs = [subprocess.run([sys.executable, "baseline.py", kind, str(count), base], cwd=base,
                                   capture_output=True, text=True, check=True, timeout=900).stdout.split()
                    for _ in range(args.repeat)]
            raw, save, zstd = (min(float(run[i]) for run in runs) for i in range(3))
            zstd_size = int(runs[0][3])
            print(f"{kind:7s} {'raw write':16s} {size / 1e6:10.1f} {1:7.2f} {raw:8.3f} {1:7.2f}")
            print(f"{kind:7s} {'numpy.save':16s} {size / 1e6:10.1f} {1:7.2f} {save:8.3f} {save / raw:7.2f}")
            print(f"{kind:7s} {'np.save+zstd -1':16s} {zstd_size / 1e6:10.1f} {zstd_size / size:7.2f} "
                  f"{zstd:8.3f} {zstd / raw:7.2f}")
            subprocess.run([sys.executable, "-c", "import numpy as np, sys; rng = np.random.default_rng(0); "
                            f"np.save(sys.argv[1], rng.integers(0, 10, {count}) if sys.argv[2] == 'codes' "
                            f"else rng.random({count}))", os.path.join(base, "data.npy"), kind], check=True)
            loads = []
            for mode in MODES:
                rounds = [one_run(base, kind, mode, count) for _ in range(args.repeat)]
                best = {key: min(r[key] for r in rounds) for key in rounds[0]}
                exit_text = f"{best['exit']:7.3f}" if "exit" in best else f"{'':7s}"
                print(f"{kind:7s} {'chkpt ' + mode:16s} {best['stored'] / 1e6:10.1f} {best['stored'] / size:7.2f} "
                      f"{best['pause']:8.3f} {best['pause'] / raw:7.2f} {exit_text}")
                if "load" in best:
                    loads.append((best["load"], best["numpy_load"]))
            for ours, numpy in loads:
                print(f"{kind:7s} first load after the run: chkpt.load {ours:.3f} s, numpy.load {numpy:.3f} s "
                      f"({ours / numpy:.2f}x)")
            os.unlink(os.path.join(base, "data.npy"))
        if not args.no_rmlist:
            rmlist(base, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
