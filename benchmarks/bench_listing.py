"""Listing at scale: `chkpt ls`, `ls --json`, `show` and `gc --dry-run` on a store of 10,000 runs
(60,000 checkpoints), each timed through the real console script beside the figures the
inspection issue measured before run summaries (target: each ≤ 1 s).

The runs are fake but valid: made directly through the store API (`Store.create_run`,
`put_blob`, `RunWriter.add_checkpoint`, `save_summary`), as the writer makes them, with small
blobs shared between runs so that the store stays small. `--legacy` makes runs without a
summary in run.json, as writers before it did (readers then read every manifest).

    python benchmarks/bench_listing.py [--runs 10000] [--checkpoints 6] [--dir /tmp] [--legacy]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from chkpt import records
from chkpt.store import Store

BEFORE = {"ls": 0.41, "ls --json": 9.05, "show": None, "gc --dry-run": 3.4}  # seconds, from the issue
CHKPT = os.path.join(os.path.dirname(sys.executable), "chkpt")


def make_store(root: str, run_count: int, checkpoints: int, legacy: bool) -> str:
    """A store of `run_count` finished runs of `checkpoints` checkpoints each; returns one run id."""
    store = Store(root)
    store.create()
    arrays = [f"array {n}".encode() * 100 for n in range(50)]
    shared = [(store.put_blob(data)[0]["hash"], len(data)) for data in arrays]
    started = time.time() - run_count * 60
    run_id = ""
    for number in range(run_count):
        script = f"/home/you/proj-{number % 3}/script{number % 7}.py"
        writer = store.create_run(records.new_run(
            script=script, script_name=os.path.basename(script), argv=[script, f"--seed={number}"],
            cwd=os.path.dirname(script), python="3.12.0", executable=sys.executable, pid=1000 + number,
            host="bench", started=started + number * 60))
        stream = f"run {number}".encode()
        own = store.put_blob(stream)[0]
        for index in range(1, checkpoints + 1):
            digest, size = shared[(number + index) % len(shared)]
            variables = [{"name": "weights", "type": "numpy.ndarray", "scope": "global", "size": size,
                          "shape": [size // 8], "dtype": "float64", "pickle": own,
                          "buffers": [records.blob_ref(digest, size)]}]
            trigger = "exit" if index == checkpoints else "periodic"
            writer.add_checkpoint({"trigger": trigger, "label": "", "time": started + number * 60 + index,
                                   "file": script, "line": 3, "function": "<module>", "variables": variables,
                                   "aliases": {}, "skipped": [], "new_bytes": size}, writer.reserve_index())
        writer.meta.update(status="finished", ended=started + number * 60 + checkpoints + 1, exit_code=0)
        if legacy:
            writer.save_meta()
        else:
            writer.save_summary()
        writer.close()
        run_id = writer.run_id
    return run_id


def timed(args: list[str], env: dict[str, str], repeat: int = 3) -> float:
    """The best of `repeat` wall-clock times of `chkpt ARGS` (output discarded)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([CHKPT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--dir", default=None, help="where to make the store (default: a temp dir)")
    parser.add_argument("--legacy", action="store_true", help="runs without summaries, as before them")
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="chkpt-bench-listing-", dir=args.dir)
    try:
        root = os.path.join(top, "store")
        start = time.perf_counter()
        run_id = make_store(root, args.runs, args.checkpoints, args.legacy)
        print(f"made {args.runs} runs, {args.runs * args.checkpoints} checkpoints in "
              f"{time.perf_counter() - start:.1f}s{' (legacy: no summaries)' if args.legacy else ''}")
        env = dict(os.environ, CHKPT_DIR=root, HOME=top, XDG_CONFIG_HOME=os.path.join(top, "config"))
        print(f"{'command':<16} {'before':>8} {'now':>8}")
        for name, command in (("ls", ["ls"]), ("ls --json", ["ls", "--json"]), ("show", ["show", run_id]),
                              ("gc --dry-run", ["gc", "--dry-run"])):
            before = BEFORE[name]
            print(f"{name:<16} {f'{before:.2f}s' if before else '-':>8} {timed(command, env):>7.2f}s", flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
