"""gc and the LRU cap: least recently used runs go first, live runs never, a dry run
says exactly what a real one frees, and the cap is kept automatically as scripts end."""

from __future__ import annotations

import json
import os
import subprocess
import time

from chkpt import cleanup
from chkpt.store import Store, layout
from conftest import PYTHON, chkpt, python, write

JOB = """
    import sys, numpy as np
    data = np.random.default_rng(int(sys.argv[1])).random(250_000)   # 2 MB, different per argument, stored raw
"""


def make_runs(env, work, values, script="job.py") -> list[str]:
    """One finished run per value, oldest first (their last use one minute apart)."""
    write(work, script, JOB)
    store = Store(env["CHKPT_DIR"])
    ids = []
    for age, value in enumerate(reversed(values)):
        before = set(store.run_ids())
        assert python([script, str(value)], env, work).returncode == 0
        [run_id] = set(store.run_ids()) - before
        stamp = time.time() - 60 * (age + 1)
        meta_path = store.path(layout.run_record(run_id))
        with open(meta_path) as handle:
            meta = json.load(handle)
        meta["ended"] = stamp
        with open(meta_path, "w") as handle:
            json.dump(meta, handle)
        os.utime(meta_path, (stamp, stamp))
        ids.insert(0, run_id)
    return ids


def test_least_recently_used_runs_go_first_and_a_dry_run_says_what_would_go(env, work):
    ids = make_runs(env, work, [1, 2, 3, 4])
    store = Store(env["CHKPT_DIR"])
    store.touch_run(ids[0])  # loaded just now: the oldest run becomes the most recently used
    dry = chkpt(["gc", "--max-size", "5MB", "--dry-run", "--json"], env, work)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["runs"] == [ids[1], ids[2]] and sorted(store.run_ids()) == sorted(ids)
    assert planned["freed"] >= 4_000_000 and planned["size_after"] <= 5_000_000
    done = json.loads(chkpt(["gc", "--max-size", "5MB", "--json"], env, work).stdout)
    assert (done["runs"], done["freed"], done["size_after"]) == (
        planned["runs"], planned["freed"], planned["size_after"])
    assert sorted(store.run_ids()) == sorted([ids[0], ids[3]])
    assert sum(size for size, _ in store.blobs().values()) == done["size_after"]


def test_older_than_and_script_pick_which_runs_go(env, work):
    ids = make_runs(env, work, [1, 2])
    other = make_runs(env, work, [3], script="other.py")
    report = cleanup.collect(Store(env["CHKPT_DIR"]), older_than=90, script="job.py")
    assert report is not None and [r["id"] for r in report.runs] == [ids[0]]
    assert sorted(Store(env["CHKPT_DIR"]).run_ids()) == sorted([ids[1], *other])


def test_a_live_run_is_never_evicted(env, work):
    write(work, "slow.py", """
        import time, numpy as np, chkpt
        data = np.ones(500_000)
        chkpt.snapshot("started")
        print("ready", flush=True)
        time.sleep(30)
    """)
    process = subprocess.Popen([PYTHON, "slow.py"], env=env, cwd=work, stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        store = Store(env["CHKPT_DIR"])
        [live] = store.run_ids()
        report = cleanup.collect(store, max_size=0, older_than=0)
        assert report is not None and report.runs == [] and store.run_ids() == [live]
        assert store.read_run(live)["status"] == "running"
    finally:
        process.kill()
        process.wait()
    assert cleanup.collect(Store(env["CHKPT_DIR"]), max_size=0).runs[0]["status"] == "killed"


def test_the_cap_is_kept_automatically_and_the_run_that_just_ended_stays(env, work):
    env["CHKPT_MAX_STORE_SIZE"] = "5MB"
    write(work, "job.py", JOB)
    store = Store(env["CHKPT_DIR"])
    for value in range(6):
        result = python(["job.py", str(value)], env, work)
        assert (result.returncode, result.stderr) == (0, "")
        total = sum(size for size, _ in store.blobs().values())
        assert total <= 5_000_000
        newest = max(store.run_ids(), key=lambda r: store.read_run(r)["started"])
        assert store.read_checkpoint(newest, 1)["variables"][0]["name"] == "data"
    estimate = store.read_usage()
    assert estimate is not None and estimate[0] >= sum(size for size, _ in store.blobs().values())


def test_a_run_larger_than_the_cap_is_kept_until_a_newer_one_ends(env, work):
    env["CHKPT_MAX_STORE_SIZE"] = "1MB"
    write(work, "job.py", JOB)
    assert python(["job.py", "1"], env, work).returncode == 0
    store = Store(env["CHKPT_DIR"])
    [first] = store.run_ids()
    assert python(["job.py", "2"], env, work).returncode == 0
    assert first not in store.run_ids() and len(store.run_ids()) == 1
