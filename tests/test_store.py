"""The store: content addressing, checkpoints that hold the state at the
safe point, limits, thinning, permissions, and the format read back without chkpt."""

from __future__ import annotations

import json
import operator
import pickle
import stat
from pathlib import Path

import pytest

from chkpt import records, serialize
from chkpt.store import CHUNK_SIZE, Store, codec
from conftest import chkpt, python, write

try:  # any zstd library reads the blobs: the standard library's (3.14+) or zstandard
    from compression.zstd import decompress as zstd_decompress
except ImportError:
    from zstandard import decompress as zstd_decompress


def read_variable(root: str, manifest: dict, name: str):
    """A saved value, read the way docs/store-format.md says: no chkpt code involved."""
    [entry] = [v for v in manifest["variables"] if v["name"] == name]

    def blob(ref: dict) -> bytes:
        if "pack" in ref:
            return blob(ref["pack"])[ref["offset"]:ref["offset"] + ref["size"]]
        key = ref["hash"] + ("." + ref["codec"] if "codec" in ref else "")
        data = Path(root, "blobs", key[:2], key[2:]).read_bytes()
        assert len(data) == ref.get("stored", ref["size"])
        if "codec" in ref:
            data = zstd_decompress(data[16:])  # after the length header
        assert len(data) == ref["size"]
        return data

    def buffer(ref: dict) -> bytes:
        return b"".join(blob(chunk) for chunk in ref["chunks"])

    return pickle.loads(blob(entry["pickle"]), buffers=[buffer(b) for b in entry["buffers"]])


def manifests(root: str, only: set[str] | None = None) -> list[dict]:
    """Every committed manifest of every run (or of the runs `only` names), in run then index order."""
    found = []
    runs_dir = Path(root, "runs")
    for run in sorted(runs_dir.iterdir()) if runs_dir.exists() else []:
        if only is not None and run.name not in only:
            continue
        for path in sorted((run / "checkpoints").glob("*.json")):
            found.append(json.loads(path.read_text()))
    return found


def explicit_checkpoints(root: str) -> dict[str, dict]:
    """The manifests of the `chkpt.snapshot` checkpoints in the store, by label."""
    return {m["label"]: m for m in manifests(root) if m["trigger"] == "explicit"}


def checkpoints_of(work: Path, name: str, source: str, env: dict[str, str]) -> dict[str, dict]:
    """Run `source` as script `name`, which must end well and say nothing on stderr; then its
    `explicit_checkpoints`."""
    write(work, name, source)
    result = python([name], env, work)
    assert (result.returncode, result.stderr) == (0, "")
    return explicit_checkpoints(env["CHKPT_DIR"])


def load_all(root: str, only: set[str] | None = None) -> int:
    """Load every variable of every listed checkpoint (of the runs `only` names, if given)
    through the store; returns how many."""
    store = Store(root)
    loaded = 0
    for run_id in store.run_ids():
        if only is not None and run_id not in only:
            continue
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
                stream = store.read_ref(variable["pickle"])
                buffers = [store.read_buffer(b) for b in variable["buffers"]]
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
    assert max(first["new_bytes"], second["new_bytes"]) > 0
    assert min(first["new_bytes"], second["new_bytes"]) == 0  # the second run dedups on the first
    assert new["unchanged"] == 0 and new["exit"] == 0
    changed = [m for m in manifests(env["CHKPT_DIR"]) if m["label"] == "changed"]
    assert 0 < max(m["new_bytes"] for m in changed) <= CHUNK_SIZE + 10_000  # one chunk, not 32 MB
    assert min(m["new_bytes"] for m in changed) == 0  # the same change, made by both runs
    blobs = Store(env["CHKPT_DIR"]).blobs()
    assert sum(size for size, _ in blobs.values()) < 32_000_000 + CHUNK_SIZE + 1_000_000


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
        import time, numpy as np, chkpt
        rng = np.random.default_rng(0)
        weights = np.zeros(2_000_000)
        step = 0
        start = time.time()
        saved = []  # 1.5 s at least, on until a periodic checkpoint has saved the weights (2 minutes at most)
        while time.time() - start < 120 and (time.time() - start < 1.5 or not saved):
            step += 1
            weights += 1.0        # every element moves together: a consistent copy is constant
            if step % 20 == 0:
                saved = [c for r in chkpt.runs() for c in r.checkpoints if "weights" in [v.name for v in c.variables]]
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
        import resource, time, numpy as np, chkpt
        weights = np.random.default_rng(0).random(24_000_000)   # 192 MB, updated in place
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        step, start, saved = 0, time.time(), []
        # 2 s at least, on until a periodic checkpoint has saved the weights (2 minutes at most)
        while time.time() - start < 120 and (time.time() - start < 2.0 or not saved):
            step += 1
            weights += 1.0
            if step % 5 == 0:
                saved = [c for r in chkpt.runs() for c in r.checkpoints if "weights" in [v.name for v in c.variables]]
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
    import numpy as np

    initial = np.random.default_rng(0).random(24_000_000)
    for manifest in periodic:
        moved = read_variable(env["CHKPT_DIR"], manifest, "weights") - initial
        assert np.allclose(moved, round(moved[0]), atol=1e-6) and round(moved[0]) <= steps  # one step


def test_a_changed_element_or_appended_rows_write_only_the_chunks_they_touch(env, work):
    write(work, "grow.py", """
        import numpy as np, chkpt
        rng = np.random.default_rng(0)
        data = rng.random(3_000_000)                    # 24 MB that do not compress: 6 chunks
        chkpt.snapshot("first")
        data[1_000_000] = -1.0
        chkpt.snapshot("element")
        data = np.concatenate([data, rng.random(30_000)])   # 1 % appended
        chkpt.snapshot("appended")
    """)
    assert python(["grow.py"], env, work).returncode == 0
    taken = explicit_checkpoints(env["CHKPT_DIR"])
    assert taken["first"]["new_bytes"] >= 24_000_000
    assert 0 < taken["element"]["new_bytes"] <= CHUNK_SIZE + 10_000      # not 24 MB again
    assert 0 < taken["appended"]["new_bytes"] <= CHUNK_SIZE + 10_000     # the tail
    element = read_variable(env["CHKPT_DIR"], taken["element"], "data")
    appended = read_variable(env["CHKPT_DIR"], taken["appended"], "data")
    assert element[1_000_000] == -1.0 and len(appended) == 3_030_000
    assert (appended[:3_000_000] == element).all()
    first = read_variable(env["CHKPT_DIR"], taken["first"], "data")
    assert first[1_000_000] != -1.0 and (first[:1_000_000] == element[:1_000_000]).all()


def test_equal_chunks_of_one_value_are_written_and_counted_once(env, work):
    write(work, "zeros.py", """
        import numpy as np, chkpt
        weights = np.zeros(16_000_000)   # 128 MB of zeros: 31 equal chunks and a shorter tail
        weights[-1] = 1.0
        chkpt.snapshot("zeros")
    """)
    assert python(["zeros.py"], env, work).returncode == 0
    (taken,) = [m for m in manifests(env["CHKPT_DIR"]) if m["trigger"] == "explicit"]
    assert taken["new_bytes"] <= 2 * CHUNK_SIZE + 10_000  # the zero chunk and the tail, once each
    loaded = read_variable(env["CHKPT_DIR"], taken, "weights")
    assert loaded.shape == (16_000_000,) and loaded[-1] == 1.0 and not loaded[:-1].any()


def test_data_that_compresses_is_stored_compressed_and_the_rest_raw(env, work):
    write(work, "codes.py", """
        import numpy as np, chkpt
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 50, 2_000_000)          # 16 MB of small integers
        noise = rng.random(2_000_000)                   # 16 MB of random floats
        chkpt.snapshot("both")
    """)
    assert python(["codes.py"], env, work).returncode == 0
    [both] = [m for m in manifests(env["CHKPT_DIR"]) if m["label"] == "both"]
    saved = {v["name"]: v for v in both["variables"]}
    assert records.variable_stored(saved["codes"]) < 0.3 * saved["codes"]["size"]
    assert records.variable_stored(saved["noise"]) >= saved["noise"]["size"]
    assert both["new_bytes"] < 0.3 * 16_000_000 + 16_100_000               # what went to disk
    import numpy as np

    rng = np.random.default_rng(0)
    assert (read_variable(env["CHKPT_DIR"], both, "codes") == rng.integers(0, 50, 2_000_000)).all()
    assert (read_variable(env["CHKPT_DIR"], both, "noise") == rng.random(2_000_000)).all()


ZSTD_LIBRARIES = [found for found in (codec.stdlib_zstd(), codec.zstandard_zstd()) if found is not None]


def test_this_python_uses_the_standard_librarys_zstd_where_there_is_one():
    import sys

    assert codec.library().name == ("compression.zstd" if sys.version_info >= (3, 14) else "zstandard")


@pytest.mark.parametrize("writer", ZSTD_LIBRARIES, ids=operator.attrgetter("name"))
@pytest.mark.parametrize("reader", ZSTD_LIBRARIES, ids=operator.attrgetter("name"))
def test_each_zstd_library_reads_what_the_other_wrote(writer, reader):
    # both available only where zstandard is installed beside Python 3.14+: the same frames both ways
    data = b"".join(i.to_bytes(4, "little") for i in range(100_000)) + bytes(1000)
    packed = codec.compress(memoryview(data), zstd=writer)
    assert packed is not None and codec.declared_length(packed[:codec.HEADER.size]) == len(packed)
    target = bytearray(len(data))
    codec.decompress_into(packed, memoryview(target), reader)
    assert target == data
    with pytest.raises(ValueError, match="not 5"):
        codec.decompress_into(packed, memoryview(bytearray(5)), reader)


@pytest.mark.parametrize("ending", ["snapshot past the memory budget", "exit", "crash"])
def test_compressible_data_is_stored_compressed_whatever_checkpoint_wrote_it(env, work, ending):
    # past memory_budget a snapshot writes chunks raw during the pause, then compresses them
    # from the page cache before it commits; exit and crash checkpoints compress during the pause
    write(work, "codes.py", f"""
        import numpy as np, chkpt
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 10, 5_000_000)          # 40 MB of category codes: 10 chunks
        noise = rng.random(1_000_000)                   # 8 MB of random floats
        {'chkpt.snapshot("codes")' if ending.startswith("snapshot") else ""}
        {'raise SystemError("boom")' if ending == "crash" else ""}
    """)
    env["CHKPT_MEMORY_BUDGET"] = "1MiB"
    result = python(["codes.py"], env, work)
    assert result.returncode == (1 if ending == "crash" else 0), result.stderr
    trigger = "explicit" if ending.startswith("snapshot") else ending
    [taken] = [m for m in manifests(env["CHKPT_DIR"]) if m["trigger"] == trigger]
    saved = {v["name"]: v for v in taken["variables"]}
    assert records.variable_stored(saved["codes"]) < 0.5 * saved["codes"]["size"]
    assert records.variable_stored(saved["noise"]) >= saved["noise"]["size"]  # random: raw
    assert taken["new_bytes"] < 0.5 * 40_000_000 + 8_100_000
    on_disk = sum(path.stat().st_size for path in Path(env["CHKPT_DIR"], "blobs").rglob("*") if path.is_file())
    assert on_disk < 0.5 * 40_000_000 + 8_100_000  # no raw copy of a compressed chunk left behind
    import numpy as np

    rng = np.random.default_rng(0)
    assert (read_variable(env["CHKPT_DIR"], taken, "codes") == rng.integers(0, 10, 5_000_000)).all()
    assert (read_variable(env["CHKPT_DIR"], taken, "noise") == rng.random(1_000_000)).all()
    store = Store(env["CHKPT_DIR"])  # and through chkpt's reader, chunks read by several threads
    loaded = serialize.loads(store.read_ref(saved["codes"]["pickle"]),
                             [store.read_buffer(b) for b in saved["codes"]["buffers"]])
    assert (loaded == np.random.default_rng(0).integers(0, 10, 5_000_000)).all()


def test_a_sigterm_checkpoint_writes_raw_and_loads_equal(env, work):
    # it races the scheduler's SIGKILL: no compression lengthens its pause
    write(work, "codes.py", """
        import os, signal, time
        import numpy as np
        codes = np.random.default_rng(0).integers(0, 10, 5_000_000)   # 40 MB of category codes
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
    """)
    result = python(["codes.py"], env, work)
    assert result.returncode == -15, result.stderr
    [taken] = [m for m in manifests(env["CHKPT_DIR"]) if m["trigger"] == "signal"]
    [saved] = [v for v in taken["variables"] if v["name"] == "codes"]
    assert records.variable_stored(saved) >= saved["size"]
    import numpy as np

    expected = np.random.default_rng(0).integers(0, 10, 5_000_000)
    assert (read_variable(env["CHKPT_DIR"], taken, "codes") == expected).all()


def test_a_format_1_store_is_read_and_a_newer_format_is_refused_in_one_line(env, work):
    import numpy as np

    store = Store(env["CHKPT_DIR"])
    store.create()
    Path(env["CHKPT_DIR"], "STORE").write_text("chkpt store 1\n")
    data = serialize.dumps(np.arange(500_000.0))                # as chkpt 0.1 wrote it: one blob
    stream, _ = store.put_blob(data.stream)
    buffer, _ = store.put_blob(data.buffers[0])
    run = store.create_run(records.new_run(script="/w/old.py", argv=["old.py"], started=1.0))
    run.add_checkpoint({"trigger": "exit", "time": 2.0, "variables": [
        {"name": "x", "type": "numpy.ndarray", "scope": "global", "size": data.size,
         "pickle": stream, "buffers": [buffer]}]}, run.reserve_index())
    run.meta.update(status="finished", ended=3.0)
    run.save_meta()
    run.close()
    old = Store(env["CHKPT_DIR"])
    [entry] = old.read_checkpoint(run.run_id, 1)["variables"]
    assert (serialize.loads(old.read_ref(entry["pickle"]), [old.read_buffer(entry["buffers"][0])])
            == np.arange(500_000.0)).all()
    Store(env["CHKPT_DIR"]).create()                            # a writer upgrades the marker
    assert Path(env["CHKPT_DIR"], "STORE").read_text() == "chkpt store 2\n"

    Path(env["CHKPT_DIR"], "STORE").write_text("chkpt store 3\n")
    listing = chkpt(["ls"], env, work)
    [line] = listing.stderr.splitlines()
    assert listing.returncode != 0 and "format 3" in line and "upgrade chkpt" in line


def test_small_values_share_one_pack_per_checkpoint_and_unchanged_ones_are_not_written_again(env, work):
    write(work, "many.py", """
        import numpy as np, chkpt
        values = {f"v{i}": np.full(200, float(i)) for i in range(300)}   # 300 values of 1.6 kB
        chkpt.snapshot("first")
        chkpt.snapshot("same")
        values["v7"][0] = -1.0
        chkpt.snapshot("one changed")
    """)
    assert python(["many.py"], env, work).returncode == 0
    taken = explicit_checkpoints(env["CHKPT_DIR"])
    assert len(taken["first"]["variables"]) > 300
    assert len(Store(env["CHKPT_DIR"]).blobs()) < 10         # not one file per value and buffer
    assert taken["first"]["new_bytes"] > 0 and taken["same"]["new_bytes"] == 0
    assert 0 < taken["one changed"]["new_bytes"] < 10_000   # the changed value and its container
    assert read_variable(env["CHKPT_DIR"], taken["one changed"], "values['v7']")[0] == -1.0
    assert read_variable(env["CHKPT_DIR"], taken["first"], "values['v7']")[0] == 7.0
    assert read_variable(env["CHKPT_DIR"], taken["one changed"], "values['v299']")[0] == 299.0
    assert load_all(env["CHKPT_DIR"]) >= 3 * 300


OBJECT_FRAME = """
    import numpy as np, pandas as pd, chkpt
    rng = np.random.default_rng(0)
    words = np.array([f"customer-{i:05d}" for i in range(5000)], dtype=object)
    frame = pd.DataFrame({"name": words[rng.integers(0, 5000, 200_000)],
                          "amount": rng.random(200_000)}).astype({"name": object})
    chkpt.snapshot("first")
    chkpt.snapshot("unchanged")
    frame.iloc[3, 0] = "changed"
    chkpt.snapshot("changed")
"""


def test_an_object_column_is_saved_apart_and_each_checkpoint_holds_it_as_it_was(env, work):
    taken = checkpoints_of(work, "objects.py", OBJECT_FRAME, env)
    assert taken["unchanged"]["new_bytes"] == 0
    assert 0 < taken["changed"]["new_bytes"] < taken["first"]["new_bytes"] / 10  # one run of 25
    first = read_variable(env["CHKPT_DIR"], taken["first"], "frame")        # plain pickle reads it
    changed = read_variable(env["CHKPT_DIR"], taken["changed"], "frame")
    assert first["name"].dtype == object and first.iloc[3, 0].startswith("customer-")
    assert changed.iloc[3, 0] == "changed" and changed.iloc[4, 0] == first.iloc[4, 0]
    assert (changed["amount"] == first["amount"]).all()


ARROW_DATA = """
    import numpy as np, pandas as pd, pyarrow as pa, chkpt
    rng = np.random.default_rng(0)
    words = np.array([f"customer-{i:05d}" for i in range(5000)], dtype=object)
    part = pd.DataFrame({"name": words[rng.integers(0, 5000, 100_000)], "amount": rng.random(100_000)})
    frame = pd.concat([part, part], ignore_index=True).astype({"name": pd.StringDtype("pyarrow")})
    counts = np.arange(200_000)
    table = pa.table({"count": pa.array(counts), "city": pa.array(words[counts % 5000].tolist())})
    chkpt.snapshot("first")
    chkpt.snapshot("unchanged")
    frame.iloc[3, 0] = "changed"
    counts[7] = -7            # the table's integers are this array's memory
    chkpt.snapshot("changed")
    frame["name"] = frame["name"].str.upper()
    table = table.set_column(1, "city", pa.array(["x"] * 200_000))
    chkpt.snapshot("replaced")
"""


def test_arrow_string_columns_are_not_copied_or_hashed_again_and_each_checkpoint_holds_them_as_they_were(
        env, work):
    import pandas as pd

    taken = checkpoints_of(work, "arrow.py", ARROW_DATA, dict(env, CHKPT_MEMORY_BUDGET="1MiB"))
    assert taken["unchanged"]["new_bytes"] == 0
    [saved] = [v for v in taken["first"]["variables"] if v["name"] == "frame"]
    # its strings, which cannot change, were compressed in the background though over the budget
    assert records.variable_stored(saved) < saved["size"] / 2
    first, changed, replaced = (read_variable(env["CHKPT_DIR"], taken[label], "frame")
                                for label in ("first", "changed", "replaced"))
    assert isinstance(first["name"].dtype, pd.StringDtype) and first.iloc[3, 0].startswith("customer-")
    assert changed.iloc[3, 0] == "changed" and changed.iloc[100_003, 0] == first.iloc[3, 0]
    assert replaced.iloc[4, 0] == first.iloc[4, 0].upper() and replaced.iloc[3, 0] == "CHANGED"
    tables = [read_variable(env["CHKPT_DIR"], taken[label], "table") for label in ("first", "changed", "replaced")]
    assert [t.column("count")[7].as_py() for t in tables] == [7, -7, -7]
    assert [t.column("city")[1].as_py() for t in tables] == ["customer-00001", "customer-00001", "x"]


def test_arrow_buffers_are_fixed_only_for_string_types_and_pandas_arrays_round_trip_uncombined():
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    kept = serialize.Kept(1 << 30)
    strings = pd.concat([pd.Series(["a", None, "ccc"] * 2000, dtype=pd.StringDtype("pyarrow"))] * 2,
                        ignore_index=True)
    numbers = pd.Series(np.arange(6000), dtype="int64[pyarrow]")
    value = {"strings": strings, "numbers": numbers, "table": pa.table({"x": pa.array(np.arange(9000))})}
    data = serialize.dumps(pd.DataFrame({"strings": strings, "numbers": numbers}), kept)
    fixed = [f for f in data.fixed if f is not None]
    assert fixed and len(fixed) < len(data.fixed)               # the string buffers, not the integers'
    assert all(str(owner.type) == "large_string" or str(owner.type) == "string" for _, _, owner in fixed)
    back = serialize.loads(data.stream, data.buffers)
    pd.testing.assert_series_equal(back["strings"], strings, check_names=False)
    assert back["strings"].array._pa_array.num_chunks == 2       # as it was, not combined into one
    plain = serialize.dumps(value, kept)
    assert not any(plain.fixed)          # a dict is pickled by plain pickle: nothing noted
    loaded = serialize.loads(plain.stream, plain.buffers)
    pd.testing.assert_series_equal(loaded["numbers"], numbers)
    assert loaded["table"].equals(value["table"])


RECORDS = """
    import chkpt
    people = [{"id": i, "name": f"user{i}", "score": float(i), "tags": ["a", "b"]} for i in range(100_000)]
    chkpt.snapshot("first")
    chkpt.snapshot("unchanged")
    people[10]["score"] = -1.0
    people[20]["tags"].append("c")
    chkpt.snapshot("changed")
    people.append({"id": -1})
    chkpt.snapshot("appended")
"""


def test_a_long_list_of_records_writes_only_the_runs_that_changed_and_each_checkpoint_holds_it_as_it_was(
        env, work):
    taken = checkpoints_of(work, "records.py", RECORDS, env)
    assert taken["unchanged"]["new_bytes"] == 0
    assert 0 < taken["changed"]["new_bytes"] < taken["first"]["new_bytes"] / 5   # one run of 13
    first, changed, appended = (read_variable(env["CHKPT_DIR"], taken[label], "people")   # plain pickle
                                for label in ("first", "changed", "appended"))
    assert len(first) == len(changed) == 100_000 and len(appended) == 100_001
    assert (first[10]["score"], changed[10]["score"], first[20]["tags"], changed[20]["tags"]) == (
        10.0, -1.0, ["a", "b"], ["a", "b", "c"])
    assert first[99_999] == changed[99_999] == {"id": 99_999, "name": "user99999", "score": 99_999.0,
                                                 "tags": ["a", "b"]}
    assert appended[-1] == {"id": -1}


def test_record_runs_are_reused_only_for_the_same_values_of_the_same_types():
    kept = serialize.Kept(1 << 30)

    def saved(value: list) -> list:
        kept.next_checkpoint()
        data = serialize.dumps(value, kept)
        back = pickle.loads(data.stream, buffers=data.buffers)
        assert back == value
        return back

    rows = [{"n": i, "ok": True, "x": -0.0, "pair": (i, None), "s": "é"} for i in range(20_000)]
    saved(rows)
    runs = kept.records.runs(rows)
    assert runs is not None and len(runs) == 3
    rows[12_000]["n"] = 12_000.0          # equal, but a float now
    rows[13_000]["ok"] = 1                # equal to True, but an int
    rows[14_000]["pair"] = [14_000, None]  # a list, not a tuple
    back = saved(rows)
    assert (type(back[12_000]["n"]), type(back[13_000]["ok"]), type(back[14_000]["pair"])) == (float, int, list)
    again = kept.records.runs(rows)
    assert again[0] is runs[0] and again[2] is runs[2] and again[1] is not runs[1]   # only that run again


def test_what_is_kept_for_the_next_checkpoint_stays_within_its_allowance():
    import numpy as np

    rows = [{"n": i, "name": f"row {i}"} for i in range(40_000)]     # 5 runs of about 170 kB
    column = np.array([f"s{i}" for i in range(20_000)], dtype=object)
    kept = serialize.Kept(400_000)
    first = kept.records.runs(rows)
    kept.arrays.pickled(column)
    assert kept.allowance.used <= 400_000 and len(kept.records.current) == 2 and not kept.arrays.current
    kept.next_checkpoint()
    again = kept.records.runs(rows)
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True, False, False, False]
    assert pickle.loads(serialize.dumps(rows, kept).stream, buffers=serialize.dumps(rows, kept).buffers) == rows


def test_a_list_sharing_a_container_between_runs_or_holding_other_objects_is_pickled_whole():
    import numpy as np

    kept = serialize.Kept(1 << 30)
    grid = [[0, 0, 0] for _ in range(20_000)]
    grid[15_000] = grid[3]                 # two runs share a row: a run's pickle would copy it
    grid[5] = grid[4]                      # within one run: kept by that run's pickle
    data = serialize.dumps(grid, kept)
    assert data.buffers == []
    back = pickle.loads(data.stream)
    assert back[15_000] is back[3] and back[5] is back[4]
    for _ in range(2):                     # the same again, its runs now known: still whole
        kept.next_checkpoint()
        for same in (grid, list(grid)):
            back = pickle.loads(serialize.dumps(same, kept).stream)
            assert back[15_000] is back[3]
    near = [[0, 0, 0] for _ in range(20_000)]
    near[5] = near[4]
    row = near[19_000]                     # referred to from outside the list: no matter
    for _ in range(2):
        kept.next_checkpoint()
        back = pickle.loads((data := serialize.dumps(near, kept)).stream, buffers=data.buffers)
        assert len(data.buffers) == 3 and back[5] is back[4] and back[6] is not back[4]
    near[15_000] = row[:]
    near[1_000].append(row)                # now two runs hold it
    back = pickle.loads((data := serialize.dumps(near, kept)).stream, buffers=data.buffers)
    assert data.buffers == [] and back[1_000][3] is back[19_000]
    rows = [{"n": i} for i in range(20_000)]
    by_n = {row["n"]: row for row in rows}  # every item referred to from elsewhere too: no matter
    runs = [kept.records.runs(rows) for _ in range(2)]
    assert runs[0] is not None and all(map(operator.is_, *runs)) and len(by_n) == 20_000
    rows[15_000] = rows[3]
    assert kept.records.runs(rows) is None
    samples = [{"image": np.zeros(20_000), "label": i} for i in range(5000)]
    data = serialize.dumps(samples, kept)  # pickled whole, the arrays out of band as always
    assert len(data.buffers) == 5000 and sum(b.nbytes for b in data.buffers) == 5000 * 160_000
    for other in ([np.float64(i) for i in range(5000)], [np.str_("x")] * 5000, [b"x" * 8] * 5000,
                  [{"v": np.int64(1)}] * 4999 + [{}]):
        data = serialize.dumps(other, kept)
        assert data.buffers == [] and pickle.loads(data.stream) == other
        assert type(pickle.loads(data.stream)[0]) is type(other[0])


def test_chunks_hashed_by_several_threads_have_the_hashes_one_thread_gives():
    import numpy as np

    from chkpt.store import hash_buffer
    from chkpt.writer import PARALLEL_WORK, hash_buffers

    data = memoryview(np.random.default_rng(0).integers(0, 255, PARALLEL_WORK + 3 * CHUNK_SIZE + 5,
                                                         dtype=np.uint8))
    chunks = [data[start:start + CHUNK_SIZE] for start in range(0, data.nbytes, CHUNK_SIZE)]
    assert hash_buffers(chunks) == [hash_buffer(chunk) for chunk in chunks]
    assert len(set(hash_buffers(chunks))) == len(chunks) and hash_buffers([]) == []


def test_an_unchanged_object_array_is_not_pickled_again_and_a_changed_element_costs_its_run():
    import numpy as np

    arrays = serialize.ObjectArrays()
    column = np.array([f"s{i}" for i in range(20_000)], dtype=object)   # 3 runs
    first, kept = arrays.pickled(column)
    assert kept and len(first) == 3
    arrays.next_checkpoint()
    again, _ = arrays.pickled(column)
    assert all(map(operator.is_, first, again))                 # the same bytes: not pickled again
    column[9_000] = "other"
    arrays.next_checkpoint()
    changed, _ = arrays.pickled(column)
    assert [a is b for a, b in zip(first, changed, strict=True)] == [True, False, True]
    assert pickle.loads(changed[1])[9_000 - serialize.RUN_ITEMS] == "other"
    block = column.reshape(2, 10_000)                            # a pandas object block is 2-D
    data = serialize.dumps(block, serialize.Kept(1 << 30))
    assert (pickle.loads(data.stream, buffers=data.buffers) == block).all()
    mutable = np.array([[i] for i in range(10_000)] + [None], dtype=object)
    entries = len(arrays.current)
    pickles, kept = arrays.pickled(mutable)
    assert not kept and pickle.loads(pickles[0])[3] == [3]       # pickled whole, never kept
    assert len(arrays.current) == entries
    arrays.clear()
    assert arrays.current == arrays.previous == {}


def test_a_chunk_written_raw_then_recompressed_reads_back_equal_and_a_reused_raw_file_stays(tmp_path):
    import os

    import numpy as np

    from chkpt.store import hash_buffer

    store = Store(str(tmp_path / "store"))
    store.create()
    codes = np.random.default_rng(0).integers(0, 10, 3 * CHUNK_SIZE // 8)   # three chunks that compress
    chunks = [memoryview(codes).cast("B")[start:start + CHUNK_SIZE] for start in range(0, codes.nbytes, CHUNK_SIZE)]
    refs = []
    for chunk in chunks:
        digest = hash_buffer(chunk)
        assert store.write_blob(digest, [chunk])
        refs.append(records.blob_ref(digest, CHUNK_SIZE))
    os.utime(store.path(f"blobs/{refs[2]['hash'][:2]}/{refs[2]['hash'][2:]}"), ns=(1, 1))  # another process reused it
    for ref in refs:
        store.recompress(ref)
    assert all(ref["codec"] == "zstd" and ref["stored"] < CHUNK_SIZE // 2 for ref in refs)
    raw_left = [Path(store.path(f"blobs/{ref['hash'][:2]}/{ref['hash'][2:]}")).exists() for ref in refs]
    assert raw_left == [False, False, True]
    loaded = store.read_buffer({"size": codes.nbytes, "chunks": refs})
    assert bytes(loaded) == codes.tobytes()
    assert store.has_blob(refs[0]["hash"], CHUNK_SIZE) == refs[0]   # found compressed, as written
    noise = np.random.default_rng(1).random(CHUNK_SIZE // 8)
    digest = hash_buffer(noise)
    store.write_blob(digest, [noise])
    ref = records.blob_ref(digest, CHUNK_SIZE)
    store.recompress(ref)  # random floats do not compress: the raw blob stays as it is
    assert ref == records.blob_ref(digest, CHUNK_SIZE) and bytes(store.read_ref(ref)) == noise.tobytes()


def test_a_list_of_large_byte_strings_stores_only_the_items_replaced_and_each_checkpoint_loads_as_it_was(env, work):
    taken = checkpoints_of(work, "items.py", """
        import os, chkpt
        items = [os.urandom(100_000) for _ in range(200)]     # 20 MB of large immutable items
        by_name = {"a": os.urandom(200_000), "b": b"small"}
        blob = os.urandom(10_000_000)
        chkpt.snapshot("first")
        with open("expected.bin", "wb") as out:   # (a list of the same items would share them)
            out.write(b"".join(items) + b"|")
        for i in (3, 50, 199):
            items[i] = os.urandom(100_000)
        chkpt.snapshot("replaced")
        with open("expected.bin", "ab") as out:
            out.write(b"".join(items) + by_name["a"] + blob)
    """, env)
    assert taken["first"]["new_bytes"] > 30_000_000
    assert taken["replaced"]["new_bytes"] < 3 * 100_000 + 100_000   # the new items, not the list again
    expected = Path(work, "expected.bin").read_bytes()
    first = read_variable(env["CHKPT_DIR"], taken["first"], "items")
    replaced = read_variable(env["CHKPT_DIR"], taken["replaced"], "items")
    by_name = read_variable(env["CHKPT_DIR"], taken["replaced"], "by_name")
    blob = read_variable(env["CHKPT_DIR"], taken["replaced"], "blob")
    assert [type(item) for item in replaced] == [bytes] * 200 and by_name["b"] == b"small"
    assert b"".join(first) + b"|" + b"".join(replaced) + by_name["a"] + blob == expected
