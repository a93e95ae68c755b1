"""The store: content addressing, checkpoints that hold the state at the
safe point, limits, thinning, permissions, and the format read back without chkpt."""

from __future__ import annotations

import json
import pickle
import stat
from pathlib import Path

from chkpt import serialize
from chkpt.store import Store
from conftest import python, write


def read_variable(root: str, manifest: dict, name: str):
    """A saved value, read the way docs/store-format.md says: no chkpt code involved."""
    [entry] = [v for v in manifest["variables"] if v["name"] == name]

    def blob(ref: dict) -> bytes:
        digest = ref["hash"]
        data = Path(root, "blobs", digest[:2], digest[2:]).read_bytes()
        assert len(data) == ref["size"]
        return data

    return pickle.loads(blob(entry["pickle"]), buffers=[blob(b) for b in entry["buffers"]])


def manifests(root: str) -> list[dict]:
    """Every committed manifest of every run, in run then index order."""
    found = []
    runs_dir = Path(root, "runs")
    for run in sorted(runs_dir.iterdir()) if runs_dir.exists() else []:
        for path in sorted((run / "checkpoints").glob("*.json")):
            found.append(json.loads(path.read_text()))
    return found


def load_all(root: str) -> int:
    """Load every variable of every listed checkpoint through the store; returns how many."""
    store = Store(root)
    loaded = 0
    for run_id in store.run_ids():
        try:
            store.read_run(run_id)
        except FileNotFoundError:
            continue  # being created, or evicted by a concurrent gc since the listing
        for index in store.checkpoint_indexes(run_id):
            try:
                manifest = store.read_checkpoint(run_id, index)
            except FileNotFoundError:
                continue  # thinned by the run's live writer since the listing
            for variable in manifest["variables"]:
                stream = store.read_blob(variable["pickle"]["hash"], variable["pickle"]["size"])
                buffers = [store.read_blob(b["hash"], b["size"]) for b in variable["buffers"]]
                serialize.loads(stream, buffers)  # parts saved on their own load as placeholders
                loaded += 1
    return loaded


SNAPSHOTS = """
    import numpy as np, chkpt
    data = np.arange(4_000_000, dtype=np.float64)   # 32 MB
    chkpt.snapshot("first")
    chkpt.snapshot("unchanged")
    data[0] = -1.0
    chkpt.snapshot("changed")
    print("done")
"""


def test_unchanged_data_is_not_written_again_in_a_run_or_the_next(env, work):
    write(work, "snap.py", SNAPSHOTS)
    for _ in range(2):
        result = python(["snap.py"], env, work)
        assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")
    first, second = [m for m in manifests(env["CHKPT_DIR"]) if m["label"] == "first"]
    new = {m["label"] or m["trigger"]: m["new_bytes"] for m in manifests(env["CHKPT_DIR"])}
    assert max(first["new_bytes"], second["new_bytes"]) >= 32_000_000
    assert min(first["new_bytes"], second["new_bytes"]) == 0  # the second run dedups on the first
    assert new["unchanged"] == 0 and new["exit"] == 0
    changed = [m for m in manifests(env["CHKPT_DIR"]) if m["label"] == "changed"]
    assert min(m["new_bytes"] for m in changed) == 0  # the same change, made by both runs
    blobs = Store(env["CHKPT_DIR"]).blobs()
    assert sum(size for size, _ in blobs.values()) < 2 * 32_000_000 + 1_000_000


def test_every_checkpoint_holds_each_value_as_it_was_at_its_safe_point(env, work):
    write(work, "mutate.py", """
        import threading, numpy as np, chkpt
        before = threading.enumerate()
        data = np.zeros(16_000_000)           # 128 MB, changed again right after each snapshot
        for step in range(1, 4):
            data[:] = step
            chkpt.snapshot(f"step {step}")
            data[:] = -step                   # right after the snapshot returned
            assert threading.enumerate() == before
        print("ok")
    """)
    result = python(["mutate.py"], env, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    taken = manifests(env["CHKPT_DIR"])
    assert [m["trigger"] for m in taken] == ["explicit"] * 3 + ["exit"]
    for manifest in taken[:3]:
        assert "data" not in {entry["name"] for entry in manifest["skipped"]}
        value = read_variable(env["CHKPT_DIR"], manifest, "data")
        step = int(manifest["label"].split()[1])
        assert value.min() == value.max() == step
    assert read_variable(env["CHKPT_DIR"], taken[3], "data")[0] == -3


def test_a_loop_updating_its_weights_in_place_has_them_in_every_checkpoint(env, work):
    write(work, "loop.py", """
        import time, numpy as np
        rng = np.random.default_rng(0)
        weights = np.zeros(2_000_000)
        step = 0
        start = time.time()
        while time.time() - start < 1.5:
            step += 1
            weights += 1.0        # every element moves together: a consistent copy is constant
        print("spun", weights[0] == step)
    """)
    env["CHKPT_INTERVAL"] = "0.1"
    result = python(["loop.py"], env, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "spun True\n", "")
    periodic = [m for m in manifests(env["CHKPT_DIR"]) if m["trigger"] == "periodic"]
    assert periodic and all("pause" in m and m["duration"] >= m["pause"] for m in periodic)
    # (one may come before `weights` exists: the first tick can fall while numpy is imported)
    in_loop = [m for m in periodic if any(v["name"] == "weights" for v in m["variables"])]
    assert in_loop and in_loop == periodic[len(periodic) - len(in_loop):]
    seen = []
    for manifest in in_loop:
        assert manifest["skipped"] == []
        weights = read_variable(env["CHKPT_DIR"], manifest, "weights")
        assert weights.min() == weights.max()  # one step of the loop, never half of an update
        seen.append(weights[0])
    assert seen == sorted(seen)


def test_limits_are_recorded_as_skipped(env, work):
    write(work, "limits.py", """
        import numpy as np, chkpt
        small = np.ones(10_000)        # 80 kB
        big = np.ones(200_000)         # 1.6 MB: over the checkpoint limit
        chkpt.snapshot("one")
        more = np.zeros(300_000)       # 2.4 MB new: over what is left of the run limit
        chkpt.snapshot("two")
    """)
    env.update(CHKPT_MAX_CHECKPOINT_SIZE="1MB", CHKPT_MAX_RUN_SIZE="2MB")
    result = python(["limits.py"], env, work)
    assert (result.returncode, result.stderr) == (0, "")
    one, two, _ = manifests(env["CHKPT_DIR"])
    assert {v["name"] for v in one["variables"]} == {"small"}
    [skipped] = [s for s in one["skipped"] if s["name"] == "big"]
    assert "max_checkpoint_size" in skipped["reason"]
    assert "small" in {v["name"] for v in two["variables"]}  # already stored: costs nothing
    reasons = {s["name"]: s["reason"] for s in two["skipped"]}
    assert "max_run_size" in reasons["more"] or "max_checkpoint_size" in reasons["more"]
    assert load_all(env["CHKPT_DIR"]) >= 3


def test_thinning_keeps_the_first_the_exit_and_the_latest(env, work):
    write(work, "many.py", """
        import numpy as np, chkpt
        for i in range(8):
            x = np.full(1000, float(i))
            chkpt.snapshot(f"s{i}")
        raise RuntimeError("boom")
    """)
    env["CHKPT_KEEP"] = "3"
    result = python(["many.py"], env, work)
    assert result.returncode == 1 and result.stderr.strip().endswith("RuntimeError: boom")
    kept = manifests(env["CHKPT_DIR"])
    assert [m["label"] for m in kept] == ["s0", "s7", ""]
    assert kept[-1]["trigger"] == "crash"


def test_store_files_are_private(env, work):
    write(work, "snap.py", SNAPSHOTS)
    assert python(["snap.py"], env, work).returncode == 0
    root = Path(env["CHKPT_DIR"])
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, path


def test_a_forked_child_never_writes_nor_holds_the_parents_locks(env, work):
    write(work, "forks.py", """
        import os, sys, time, numpy as np, chkpt
        data = np.ones(4_000_000)
        chkpt.snapshot("before fork")          # still being written while we fork
        pid = os.fork()
        if pid == 0:
            time.sleep(3)                      # outlives the parent
            os._exit(0)
        print(pid)
    """)
    result = python(["forks.py"], env, work)
    assert result.returncode == 0 and result.stderr == ""
    from chkpt import cleanup

    store = Store(env["CHKPT_DIR"])
    [run_id] = store.run_ids()
    assert not store.is_live(run_id)  # the child still lives, but holds no lock of the run
    assert cleanup.collect(store, blocking=False) is not None  # nor the store's
    assert [m["trigger"] for m in manifests(env["CHKPT_DIR"])] == ["explicit", "exit"]
    assert store.read_run(run_id)["status"] == "finished"
    assert load_all(env["CHKPT_DIR"]) == 2


def test_checkpoints_of_large_weights_stay_within_the_memory_budget(env, work):
    write(work, "train.py", """
        import resource, time, numpy as np
        weights = np.full(24_000_000, 0.0)   # 192 MB (every page touched), updated in place
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        step, start = 0, time.time()
        while time.time() - start < 2.0:
            step += 1
            weights += 1.0
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        print(step, grown)
    """)
    env.update(CHKPT_INTERVAL="0.2", CHKPT_MEMORY_BUDGET="16MiB")
    result = python(["train.py"], env, work)
    assert result.returncode == 0, result.stderr
    steps, grown = map(int, result.stdout.split())
    # chkpt's own code and buffers are a few MiB; a copy of the weights would be 192 MB
    assert grown < 16 * 2**20 + 48 * 2**20, f"peak memory grew by {grown / 2**20:.0f} MiB"
    periodic = [m for m in manifests(env["CHKPT_DIR"]) if m["trigger"] == "periodic"
                and any(v["name"] == "weights" for v in m["variables"])]
    assert periodic  # (how many depends on the disk: their pauses take at most 5 % of the run)
    for manifest in periodic:
        weights = read_variable(env["CHKPT_DIR"], manifest, "weights")
        assert weights.min() == weights.max() <= steps
