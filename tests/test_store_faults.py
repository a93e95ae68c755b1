"""Fault tests with real processes: SIGKILL at random instants, concurrent
writers with a concurrent gc, disk full, a read-only store, corrupt and truncated files.

Each ends with every listed checkpoint loading, at most one `chkpt: ` line on stderr where the
script had a problem, and the script's own output and exit code unchanged."""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from chkpt import cleanup, records
from chkpt.eviction import TMP_GRACE_SECONDS
from chkpt.store import Store, StoreError, layout
from conftest import CHKPT, PYTHON, chkpt, python, write
from test_store import load_all, manifests, read_variable

WORKER = """
    import sys, time, numpy as np, chkpt
    seed = int(sys.argv[1])
    rng = np.random.default_rng(seed)
    fixed = np.arange(1_000_000, dtype=np.float64)      # the same in every run: deduplicated
    block = np.zeros(2_000_000)
    for step in range(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000):
        block[:] = seed * 1000 + step                       # one consistent value per moment
        noise = rng.random(300_000)
        if len(sys.argv) > 3:
            t = time.time()
            while time.time() - t < 0.01:                   # periodic checkpoints land here
                pass
        else:
            chkpt.snapshot(f"step {step}")
    print("done", seed)
"""


STILL_THERE = """
    import os
    from chkpt import watch
    from chkpt.store import layout
    run = watch.active()._writer.run
    assert run is not None and os.path.isdir(run.store.path(layout.run_dir(run.run_id))), "a live run was evicted"
"""


def check_consistent(root: str, only: set[str] | None = None) -> int:
    """Every listed checkpoint (of the runs `only` names, if given) loads, and each saved
    `block` is one moment of the loop."""
    loaded = load_all(root, only)
    for manifest in manifests(root, only):
        if any(v["name"] == "block" for v in manifest["variables"]):
            block = read_variable(root, manifest, "block")
            assert block.min() == block.max(), manifest
    return loaded


def backdate_everything(root: str) -> None:
    """Make every file look older than gc's grace period (as if a day had passed)."""
    old = time.time() - 2 * TMP_GRACE_SECONDS
    for directory, _, files in os.walk(root):
        for name in [*files, "."]:
            os.utime(os.path.join(directory, name), (old, old))


def test_sigkill_at_random_instants_leaves_a_consistent_store(env, work):
    write(work, "worker.py", WORKER)
    rng = random.Random(5)
    runs_dir, checked = Path(env["CHKPT_DIR"], "runs"), set()
    for attempt in range(14):
        periodic = attempt % 2 == 1
        args = [PYTHON, "worker.py", str(attempt), "10000"] + (["periodic"] if periodic else [])
        run_env = dict(env, CHKPT_INTERVAL="0.05") if periodic else env
        process = subprocess.Popen(args, env=run_env, cwd=work, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 1.6))
        process.kill()
        _, stderr = process.communicate()
        assert process.returncode == -signal.SIGKILL
        assert stderr == b""
        # the run just killed (the others were checked after their kill, and all are again below)
        killed = set(os.listdir(runs_dir)) - checked if runs_dir.exists() else set()
        check_consistent(env["CHKPT_DIR"], killed)
        checked |= killed
    store = Store(env["CHKPT_DIR"])
    statuses = {store.read_run(r)["status"] for r in store.run_ids()
                if os.path.exists(store.path(layout.run_record(r)))}
    assert statuses <= {"killed"}
    committed = check_consistent(env["CHKPT_DIR"])
    assert committed > 0

    backdate_everything(env["CHKPT_DIR"])
    report = cleanup.collect(store)  # sweeps what the killed writers left: nothing committed goes
    assert report is not None and report.runs == [r for r in report.runs if r["status"] == "incomplete"]
    assert check_consistent(env["CHKPT_DIR"]) == committed
    assert os.listdir(store.path(layout.TMP)) == []
    referenced = {d for m in manifests(env["CHKPT_DIR"]) for d in records.manifest_blobs(m)}
    referenced |= {store.read_run(r).get("source", {}).get("hash") for r in store.run_ids()}
    assert set(store.blobs()) <= referenced


def test_four_writers_and_a_concurrent_gc_lose_and_mix_nothing(env, work):
    write(work, "worker.py", WORKER + STILL_THERE)
    writers = [subprocess.Popen([PYTHON, "worker.py", str(i), "25"], env=env, cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(1, 5)]
    collections = 0
    while any(w.poll() is None for w in writers) or collections < 3:
        result = chkpt(["gc", "--max-size", "0"], env, work)
        assert result.returncode == 0, result.stderr
        collections += 1
        check_consistent(env["CHKPT_DIR"])
    for i, writer in enumerate(writers, start=1):
        stdout, stderr = writer.communicate()
        assert (writer.returncode, stdout, stderr) == (0, f"done {i}\n", "")
    check_consistent(env["CHKPT_DIR"])
    store = Store(env["CHKPT_DIR"])
    backdate_everything(env["CHKPT_DIR"])  # blobs that thinning released, past their grace
    assert cleanup.collect(store, max_size=0) is not None
    assert store.run_ids() == []  # once the writers ended, everything can go
    assert sum(size for size, _ in store.blobs().values()) == 0


@pytest.mark.parametrize("floats", [2_000_000, 12_000_000])  # the larger written by several threads
def test_disk_full_gives_one_warning_and_keeps_what_was_committed(env, work, floats):
    env = dict(env, CHKPT_MEMORY_BUDGET="1MiB")  # written during the pause, not by the background thread
    write(work, "full.py", f"""
        import sys, numpy as np, chkpt
        small = np.ones(20_000)            # 160 kB: fits
        chkpt.snapshot("small")
        big = np.random.default_rng(0).random({floats})   # data that does not compress: over the limit
        chkpt.snapshot("big")
        more = np.zeros(3_000_000)
        chkpt.snapshot("after")
        print("still running")
        sys.exit(3)
    """)
    plain = python(["full.py"], dict(env, CHKPT="0"), work)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    result = subprocess.run([PYTHON, "full.py"], env=env, cwd=work, capture_output=True,
                            text=True, preexec_fn=limit_file_size, timeout=120)
    assert (result.returncode, result.stdout) == (plain.returncode, plain.stdout)
    [warning] = result.stderr.splitlines()
    assert warning.startswith("chkpt: cannot write checkpoints to ") and "File too large" in warning
    taken = manifests(env["CHKPT_DIR"])
    assert [m["label"] for m in taken] == ["small"]
    assert read_variable(env["CHKPT_DIR"], taken[0], "small").sum() == 20_000
    store = Store(env["CHKPT_DIR"])
    [run_id] = store.run_ids()
    meta = store.read_run(run_id)
    assert (meta["status"], meta["exit_code"]) == ("finished", 3) and "File too large" in meta["problem"]


def _make_read_only(root: Path) -> None:
    """chmod for a normal user; root ignores modes, so the immutable attribute stands in."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o500)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "-R", "+i", str(root)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot make a directory read-only for root here (no chattr +i)")


def _make_writable(root: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o700)


def test_read_only_store_gives_one_warning_and_the_script_runs_on(env, work):
    write(work, "job.py", """
        import numpy as np
        data = np.arange(50_000.0)
        print("result", data.sum())
    """)
    assert python(["job.py"], env, work).returncode == 0
    before = load_all(env["CHKPT_DIR"])
    write(work, "job.py", """
        import numpy as np
        data = np.arange(60_000.0)
        print("result", data.sum())
    """)
    plain = python(["job.py"], dict(env, CHKPT="0"), work)
    root = Path(env["CHKPT_DIR"])
    _make_read_only(root)
    try:
        result = python(["job.py"], env, work)
    finally:
        _make_writable(root)
    assert (result.returncode, result.stdout) == (plain.returncode, plain.stdout)
    [warning] = result.stderr.splitlines()
    assert warning.startswith("chkpt: cannot write checkpoints to ")
    assert load_all(env["CHKPT_DIR"]) == before
    assert len(Store(env["CHKPT_DIR"]).run_ids()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the store to another user")
def test_a_store_of_another_user_is_not_used(env, work):
    root = Path(env["CHKPT_DIR"])
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    write(work, "job.py", "import numpy as np\ndata = np.ones(5000)\nprint('ok')\n")
    result = python(["job.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "ok\n")
    [warning] = result.stderr.splitlines()
    assert "belongs to uid 65534" in warning
    assert os.listdir(root) == []


def test_corrupt_and_truncated_files_are_reported_and_the_rest_loads(env, work):
    write(work, "job.py", """
        import sys, numpy as np, chkpt
        n = int(sys.argv[1])
        a = np.full(300_000, float(n))      # 2.4 MB: its own blob per run
        b = np.arange(200_000.0) + n
        chkpt.snapshot("one")
        c = np.ones(1000) * n
    """)
    for n in range(4):
        assert python(["job.py", str(n)], env, work).returncode == 0
    store = Store(env["CHKPT_DIR"])
    runs = store.run_ids()
    cut = store.path(layout.manifest(runs[0], 1))
    Path(cut).write_bytes(Path(cut).read_bytes()[:40])               # truncated manifest
    Path(store.path(layout.manifest(runs[1], 2))).write_text("{not json")   # corrupt manifest
    a_blob = lambda run: next(v for v in store.read_checkpoint(run, 1)["variables"]  # noqa: E731
                          if v["name"] == "a")["buffers"][0]["chunks"][0]
    short = a_blob(runs[2])
    path = Path(store.path(layout.blob(records.blob_key(short))))
    path.write_bytes(path.read_bytes()[:records.stored_size(short) // 2])  # truncated blob
    flipped = Path(store.path(layout.blob(records.blob_key(a_blob(runs[3])))))
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))                                  # damaged blob, same size

    listing = chkpt(["ls", "--json"], env, work)
    assert listing.returncode == 0
    for run_id in runs:
        shown = chkpt(["show", run_id], env, work)
        assert shown.returncode == 0 or shown.stderr.startswith("chkpt: ")
    for run_id, message in ((runs[2], "truncated"), (runs[3], "corrupt")):
        [entry] = [v for v in store.read_checkpoint(run_id, 1)["variables"] if v["name"] == "a"]
        with pytest.raises(StoreError, match=message):
            store.read_buffer(entry["buffers"][0])
        [entry] = [v for v in store.read_checkpoint(run_id, 1)["variables"] if v["name"] == "b"]
        assert store.read_buffer(entry["buffers"][0])

    # The same data written again replaces the truncated blob instead of referring to it.
    assert python(["job.py", "2"], env, work).returncode == 0
    newest = next(r for r in store.run_ids() if r not in runs)
    assert read_variable(env["CHKPT_DIR"], store.read_checkpoint(newest, 1), "a")[0] == 2.0

    result = subprocess.run([CHKPT, "gc"], env=env, cwd=work, capture_output=True, text=True)
    assert result.returncode == 0
    assert "corrupt" in result.stderr
    assert not os.path.exists(cut) and not os.path.exists(store.path(layout.manifest(runs[1], 2)))
    for run_id in store.run_ids():
        for index in store.checkpoint_indexes(run_id):
            store.read_checkpoint(run_id, index)  # every listed manifest parses now


def test_gc_removes_leftovers_of_killed_processes_only_after_the_grace_period(env, work):
    write(work, "job.py", "import numpy as np\ndata = np.ones(50_000)\n")
    assert python(["job.py"], env, work).returncode == 0
    store = Store(env["CHKPT_DIR"])
    Path(store.path(layout.join(layout.TMP, "12345-abcdef"))).write_bytes(b"x" * 5000)      # a half-written file
    os.mkdir(store.path(layout.run_dir("deadbeef")))                               # a run that never started
    orphan = store.put_blob(b"y" * 7000)[0]["hash"]                  # a blob never committed
    assert cleanup.collect(store).freed == 0                               # all young: may be in use
    for path in (store.path(layout.join(layout.TMP, "12345-abcdef")), store.path(layout.run_dir("deadbeef")),
                 store.path(layout.blob(orphan))):
        old = time.time() - 2 * TMP_GRACE_SECONDS
        os.utime(path, (old, old))
    dry = cleanup.collect(store, dry_run=True)
    assert dry is not None and dry.freed == 12_000 and [r["id"] for r in dry.runs] == ["deadbeef"]
    assert os.path.exists(store.path(layout.blob(orphan)))
    done = cleanup.collect(store)
    assert done is not None and done.freed == dry.freed
    assert os.listdir(store.path(layout.TMP)) == [] and store.run_ids() != ["deadbeef"]
    assert not os.path.exists(store.path(layout.blob(orphan))) and load_all(env["CHKPT_DIR"]) == 1
    shutil.rmtree(env["CHKPT_DIR"])


# -- chkpt's descriptors are never the program's -------------------------------------------------------

CLOSES_EVERYTHING = """
    import os, sys, numpy as np, chkpt
    data = np.arange(100_000.0)
    chkpt.snapshot("before")                 # the run (and its lock) exists from here on
    os.closerange(3, 256)                    # a daemon closes every descriptor it did not open
    outs = [open(f"out{k}.txt", "w") for k in range(4)]   # they get the numbers chkpt had
    for i in range(2000):
        outs[i % 4].write(f"line {i} {'x' * 40}\\n")
    after = sys.argv[1]
    if after == "snapshot":
        chkpt.snapshot("after")
        outs[0].write("after the snapshot\\n")
    elif after == "fork":                    # the child closes chkpt's locks, never the program's files
        for out in outs:
            out.flush()
        pid = os.fork()
        if pid == 0:
            outs[1].write("from the child\\n")
            outs[1].flush()
            os._exit(0)
        os.waitpid(pid, 0)
    more = np.ones(50_000) * 7               # the exit checkpoint has something new to write
    print("written", after)
"""


def _outputs(work: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(work.glob("out*.txt"))}


@pytest.mark.parametrize("after", ["exit", "snapshot", "fork"])
def test_a_program_that_closes_every_descriptor_keeps_every_byte_it_writes(env, work, after):
    env = dict(env, CHKPT_MEMORY_BUDGET="0")  # written during the pause: no background thread at closerange
    write(work, "daemon.py", CLOSES_EVERYTHING)
    plain = python(["daemon.py", after], dict(env, CHKPT="0"), work)
    expected = _outputs(work)
    assert plain.returncode == 0 and len(b"".join(expected.values()).splitlines()) >= 2000
    for path in work.glob("out*.txt"):
        path.unlink()
    traced = python(["daemon.py", after], env, work)
    assert (traced.returncode, traced.stdout, traced.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert _outputs(work) == expected
    labels = [m["label"] or m["trigger"] for m in manifests(env["CHKPT_DIR"])]
    assert labels == (["before", "after", "exit"] if after == "snapshot" else ["before", "exit"])
    assert load_all(env["CHKPT_DIR"]) > 0


def test_a_run_whose_lock_the_program_closed_stays_live(env, work):
    write(work, "daemon.py", """
        import os, numpy as np, chkpt
        data = np.arange(100_000.0)
        chkpt.snapshot("before")
        os.closerange(3, 256)            # closes chkpt's run lock, and with it the lock
        data += 1
        chkpt.snapshot("after")          # takes it again
        print([run.status for run in chkpt.runs()])
    """)
    result = python(["daemon.py"], dict(env, CHKPT_MEMORY_BUDGET="0"), work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "['running']\n", "")


def test_a_background_write_never_touches_a_descriptor_the_program_took_over(env, work):
    """The program closes everything while a checkpoint is being compressed and written in the
    background: its own files are intact whatever instant that falls on (chkpt at worst says
    in one line that it stopped)."""
    write(work, "daemon.py", """
        import os, numpy as np, chkpt
        codes = np.arange(6_000_000) % 10     # 48 MB that compresses: written by the background thread
        chkpt.snapshot("big")
        os.closerange(3, 256)
        outs = [open(f"out{k}.txt", "w") for k in range(6)]
        for i in range(3000):
            outs[i % 6].write(f"line {i}\\n")
        print("written")
    """)
    plain = python(["daemon.py"], dict(env, CHKPT="0"), work)
    expected = _outputs(work)
    for path in work.glob("out*.txt"):
        path.unlink()
    traced = python(["daemon.py"], env, work)
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
    assert all(line.startswith("chkpt: ") for line in traced.stderr.splitlines())
    assert len(traced.stderr.splitlines()) <= 1
    assert _outputs(work) == expected


# -- a failed checkpoint leaves nothing behind ----------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MiB file system of its own (tmpfs; needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_gets_back_what_a_failed_checkpoint_wrote(env, work, small_disk):
    write(work, "fill.py", """
        import sys, numpy as np, chkpt
        first = np.random.default_rng(0).random(2_000_000)     # 16 MB that does not compress
        chkpt.snapshot("first")
        second = np.random.default_rng(1).random(4_000_000)    # 32 MB: the disk is full halfway through
        chkpt.snapshot("second")
        with open(sys.argv[1], "wb") as mine:                  # the program's own file, on the same disk
            mine.write(b"x" * 12_000_000)
        print("wrote my file")
    """)
    env = dict(env, CHKPT_DIR=str(small_disk / "store"), CHKPT_MEMORY_BUDGET="0")
    mine = str(small_disk / "mine.bin")
    plain = python(["fill.py", mine], dict(env, CHKPT="0"), work)
    assert (plain.returncode, plain.stdout) == (0, "wrote my file\n"), plain.stderr
    os.unlink(mine)
    traced = python(["fill.py", mine], env, work)
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout), traced.stderr
    [warning] = traced.stderr.splitlines()
    assert warning.startswith("chkpt: cannot write checkpoints to ") and "No space left on device" in warning
    assert os.path.getsize(mine) == 12_000_000
    store = Store(env["CHKPT_DIR"])
    [taken] = manifests(env["CHKPT_DIR"])
    assert taken["label"] == "first" and read_variable(env["CHKPT_DIR"], taken, "first").sum() > 0
    referenced = set(records.manifest_blobs(taken)) | {store.read_run(store.run_ids()[0])["source"]["hash"]}
    assert set(store.blobs()) == referenced  # nothing of the failed checkpoint stays
    assert os.listdir(store.path(layout.TMP)) == []


# -- a stored file is used only once its content is verified --------------------------------------------

REUSED = """
    import numpy as np, chkpt
    big = np.random.default_rng(0).random(600_000)     # 4.8 MB of random floats: raw chunks
    codes = np.arange(600_000) % 7                      # compresses: a compressed chunk
    small = {"a": 1, "b": [1, 2, 3]}                     # packed with the other small parts
    chkpt.snapshot("one")
    print("ok")
"""


def _damaged_blob(store: Store, run_id: str, kind: str) -> str:
    """The key of a blob of `kind` the run refers to."""
    if kind == "source":
        return layout.blob(records.blob_key(store.read_run(run_id)["source"]))
    manifest = store.read_checkpoint(run_id, 1)
    refs = [ref for variable in manifest["variables"] for ref in records.variable_refs(variable)]
    chosen = {"raw chunk": lambda ref: "pack" not in ref and "codec" not in ref and ref["size"] >= 1 << 20,
              "compressed chunk": lambda ref: "codec" in ref and "pack" not in ref,
              "pack": lambda ref: "pack" in ref}[kind]
    return layout.blob(records.blob_key(records.file_ref(next(ref for ref in refs if chosen(ref)))))


@pytest.mark.parametrize("kind", ["raw chunk", "compressed chunk", "pack", "source"])
def test_a_blob_damaged_in_place_is_never_reused_and_the_next_run_writes_it_again(env, work, kind):
    write(work, "job.py", REUSED)
    assert python(["job.py"], env, work).stdout == "ok\n"
    store = Store(env["CHKPT_DIR"])
    [first] = store.run_ids()
    path = Path(store.path(_damaged_blob(store, first, kind)))
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x10  # one bit, same size: only its content tells
    path.write_bytes(bytes(damaged))

    again = python(["job.py"], env, work)
    assert (again.returncode, again.stdout, again.stderr) == (0, "ok\n", "")
    assert path.read_bytes() == good  # written again from the data
    assert load_all(env["CHKPT_DIR"]) == 2 * load_all_of_one_run(env["CHKPT_DIR"], first)
    for run_id in store.run_ids():
        source = store.read_run(run_id)["source"]
        assert bytes(store.read_ref(source)) == (work / "job.py").read_bytes()


def load_all_of_one_run(root: str, run_id: str) -> int:
    store = Store(root)
    return sum(len(store.read_checkpoint(run_id, index)["variables"]) for index in store.checkpoint_indexes(run_id))
