"""Loading a checkpoint's variables back, beside numpy.load and pickle of the same values.

A script run under chkpt saves 14 small arrays (1,000 float64 each) and ends; a fresh process
then loads them:

- by name, one `chkpt.load(name, run=ref)` call each, twice over (the first round reads each
  manifest, the second finds it read), beside `numpy.load` of the same arrays from 14 .npy files
  (target ≤ 3x);
- all at once, `Checkpoint.load_all()`, beside `pickle.load` of the 14 arrays from one file.

`--runs N` runs the script N times first (a store with N runs; the last is loaded).

Each figure is the least of --repeat rounds, in turns. Takes a few seconds.

    python benchmarks/bench_load.py [--arrays 14] [--size 1000] [--repeat 20] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

SAVE = """
import numpy as np, pickle, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(count):
    globals()[f"a{i}"] = rng.random(size)
    np.save(f"a{i}.npy", globals()[f"a{i}"])
with open("all.pickle", "wb") as f:
    pickle.dump({f"a{i}": globals()[f"a{i}"] for i in range(count)}, f, protocol=5)
"""

LOAD = """
import json, pickle, sys, time
import numpy as np
import chkpt

count, repeat = int(sys.argv[1]), int(sys.argv[2])
names = [f"a{i}" for i in range(count)]
ref = chkpt.runs()[0].checkpoint().ref


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def by_name():
    return [chkpt.load(name, run=ref) for name in names]


def numpy_load():
    return [np.load(f"{name}.npy") for name in names]


def load_all():
    from chkpt import api
    return api.checkpoint_at(ref).load_all()


def pickle_load():
    with open("all.pickle", "rb") as f:
        return pickle.load(f)


first = timed(by_name)  # the manifest read for the first time in this process
for got, want in zip(by_name(), numpy_load(), strict=True):
    assert (got == want).all()
rounds = {"by_name": [], "numpy_load": [], "load_all": [], "pickle_load": []}
for _ in range(repeat):
    for key, function in (("by_name", by_name), ("numpy_load", numpy_load), ("load_all", load_all),
                          ("pickle_load", pickle_load)):
        rounds[key].append(timed(function))
print(json.dumps({"first_by_name": first, **{key: min(values) for key, values in rounds.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", type=int, default=14)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ, CHKPT_DIR=os.path.join(work, "store"), CHKPT_INTERVAL="1h")
        env.pop("CHKPT", None)
        for name, text in (("save.py", SAVE), ("load.py", LOAD)):
            with open(os.path.join(work, name), "w") as f:
                f.write(textwrap.dedent(text))
        for _ in range(args.runs):
            subprocess.run([sys.executable, "save.py", str(args.arrays), str(args.size)], cwd=work, env=env,
                           check=True)
        done = subprocess.run([sys.executable, "load.py", str(args.arrays), str(args.repeat)], cwd=work,
                              env=dict(env, CHKPT="0"), check=True, capture_output=True, text=True)
        figures = json.loads(done.stdout)
    ms = {key: value * 1000 for key, value in figures.items()}
    print(f"{args.arrays} arrays of {args.size} float64 in a store of {args.runs} run(s), "
          f"least of {args.repeat} rounds")
    print(f"  chkpt.load by name, first call    {ms['first_by_name']:8.2f} ms")
    print(f"  chkpt.load by name, again         {ms['by_name']:8.2f} ms   "
          f"numpy.load of {args.arrays} .npy files {ms['numpy_load']:6.2f} ms   "
          f"ratio {ms['by_name'] / ms['numpy_load']:.1f}x (target <= 3x)")
    print(f"  Checkpoint.load_all()             {ms['load_all']:8.2f} ms   "
          f"pickle.load of one file           {ms['pickle_load']:6.2f} ms   "
          f"ratio {ms['load_all'] / ms['pickle_load']:.1f}x")


if __name__ == "__main__":
    main()
