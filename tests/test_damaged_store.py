"""Readers survive one damaged run: ls marks it, show names the file, gc removes it, others load."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from chkpt import records
from conftest import chkpt, python, write

SCRIPT = """
import sys, numpy as np, pandas as pd
seed = int(sys.argv[1])
arr = np.arange(20_000.0) + seed
df = pd.DataFrame({"a": np.arange(5_000.0) * seed, "b": np.arange(5_000) % (seed + 2)})
print("ok", seed)
"""


def expected_sum(seed: int) -> float:
    return float(sum(range(20_000)) + 20_000 * seed)


def manifest_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.json"))


def blob_refs(manifest: dict) -> list[str]:
    """The names of the blob files a manifest refers to."""
    return [records.blob_key(ref) for entry in manifest["variables"] for ref in records.variable_refs(entry)]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Three real runs of data.py (seeds 1, 2, 3), made once for the module; each test damages
    its own copy."""
    base = tmp_path_factory.mktemp("template")
    home = base / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHKPT", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               CHKPT_DIR=str(base / "store"))
    work = base / "work"
    work.mkdir()
    write(work, "data.py", SCRIPT)
    for seed in (1, 2, 3):
        result = python(["data.py", str(seed)], env, work)
        assert (result.returncode, result.stdout) == (0, f"ok {seed}\n"), result.stderr
    listed = json.loads(chkpt(["ls", "--json"], env, work).stdout)
    return base / "store", work, {int(r["argv"][1]): r["id"] for r in listed}


@pytest.fixture
def store(template, env):
    """A copy of the template store at this test's CHKPT_DIR; the middle run is the one damaged."""
    root, work, by_seed = template
    shutil.copytree(root, env["CHKPT_DIR"], symlinks=True)
    return {"root": Path(env["CHKPT_DIR"]), "work": work, "damaged": by_seed[2],
            "others": {by_seed[1]: 1, by_seed[3]: 3}}


def exclusive_blob(s) -> str:
    """A blob of the damaged run whose shard directory no other run uses."""
    runs_dir = s["root"] / "runs"
    used = set()
    for other in s["others"]:
        meta = json.loads((runs_dir / other / "run.json").read_text())
        used.add(meta.get("source", {}).get("hash", ""))
        for path in manifest_paths(runs_dir / other):
            used.update(blob_refs(json.loads(path.read_text())))
    used_shards = {digest[:2] for digest in used}
    meta = json.loads((runs_dir / s["damaged"] / "run.json").read_text())
    mine = [d for p in manifest_paths(runs_dir / s["damaged"])
            for d in blob_refs(json.loads(p.read_text()))]
    mine = [d for d in mine if d[:2] not in used_shards and d != meta.get("source", {}).get("hash")]
    if not mine:
        pytest.skip("every blob of the run shares a shard with another run (rare: re-run)")
    return mine[0]


def edit_run_json(change):
    def damage(s, run_dir: Path) -> str:
        path = run_dir / "run.json"
        meta = json.loads(path.read_text())
        path.write_text(json.dumps(change(meta)))
        return "run.json"
    return damage


def edit_manifest(change):
    def damage(s, run_dir: Path) -> str:
        path = manifest_paths(run_dir)[0]
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
        return path.name
    return damage


def arr_entry(manifest: dict) -> dict:
    return next(e for e in manifest["variables"] if e["name"] == "arr")


def run_json_directory(s, run_dir: Path) -> str:
    (run_dir / "run.json").unlink()
    (run_dir / "run.json").mkdir()
    return "run.json"


def checkpoints_file(s, run_dir: Path) -> str:
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").write_text("not a directory\n")
    return "checkpoints"


def blob_directory(s, run_dir: Path) -> str:
    digest = exclusive_blob(s)
    path = s["root"] / "blobs" / digest[:2] / digest[2:]
    path.unlink()
    path.mkdir()
    return digest


def shard_file(s, run_dir: Path) -> str:
    digest = exclusive_blob(s)
    shard = s["root"] / "blobs" / digest[:2]
    shutil.rmtree(shard)
    shard.write_text("not a directory\n")
    return digest[:2]


def set_key(key, value):
    def change(data):
        data[key] = value
        return data
    return change


DAMAGE = {
    "run_json_ended_str": edit_run_json(set_key("ended", "x")),
    "run_json_status_int": edit_run_json(set_key("status", 5)),
    "run_json_started_str": edit_run_json(set_key("started", "yesterday")),
    "run_json_argv_int": edit_run_json(set_key("argv", 3)),
    "run_json_script_null": edit_run_json(set_key("script", None)),
    "run_json_list": edit_run_json(lambda meta: [meta]),
    "run_json_directory": run_json_directory,
    "manifest_variables_dict": edit_manifest(set_key("variables", {})),
    "manifest_line_str": edit_manifest(set_key("line", "x")),
    "manifest_time_null": edit_manifest(set_key("time", None)),
    "manifest_entry_without_pickle": edit_manifest(lambda m: arr_entry(m).pop("pickle")),
    "manifest_buffers_str": edit_manifest(lambda m: arr_entry(m).__setitem__("buffers", "no")),
    "checkpoints_is_a_file": checkpoints_file,
}
# Listing reads records and manifests only, never a blob: a damaged blob shows when it is loaded.
BLOB_DAMAGE = {"blob_is_a_directory": blob_directory, "blob_shard_is_a_file": shard_file}

LOAD = "import chkpt; print(float(chkpt.load('arr', run={run!r}).sum()))"


def no_traceback(label, result, problems) -> None:
    if "Traceback" in result.stderr:
        problems.append(f"{label}: traceback: {result.stderr.strip().splitlines()[-1]!r}")


def others_load(s, env, label, problems) -> None:
    for run_id, seed in s["others"].items():
        loaded = python(["-c", LOAD.format(run=run_id)], env, s["work"])
        if (loaded.returncode, loaded.stdout) != (0, f"{expected_sum(seed)}\n"):
            problems.append(f"{label}: run {run_id} does not load: {loaded.stderr[-200:]!r}")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_damaged_run_is_reported_and_the_others_work(damage, store, env):
    s, work, bad = store, store["work"], store["damaged"]
    fragment = DAMAGE[damage](s, s["root"] / "runs" / bad)
    problems: list[str] = []

    listed = chkpt(["ls"], env, work)
    no_traceback("ls", listed, problems)
    if listed.returncode != 0:
        problems.append(f"ls: exit status {listed.returncode}")
    rows = listed.stdout.splitlines()
    for other in s["others"]:
        if not any(row.startswith(other) for row in rows):
            problems.append(f"ls: run {other} not listed")
    bad_rows = [row for row in rows if row.startswith(bad)]
    if len(bad_rows) != 1 or "damaged" not in bad_rows[0]:
        problems.append(f"ls: the damaged run's row is {bad_rows!r}")

    as_json = chkpt(["ls", "--json"], env, work)
    no_traceback("ls --json", as_json, problems)
    try:
        statuses = {r["id"]: r["status"] for r in json.loads(as_json.stdout)}
    except (ValueError, TypeError, KeyError) as exc:
        problems.append(f"ls --json: not a JSON list of runs ({exc}): {as_json.stdout[:100]!r}")
    else:
        if as_json.returncode != 0:
            problems.append(f"ls --json: exit status {as_json.returncode}")
        if statuses.get(bad) != "damaged":
            problems.append(f"ls --json: the damaged run's status is {statuses.get(bad)!r}")
        if not set(s["others"]) <= set(statuses):
            problems.append("ls --json: an undamaged run is missing")

    for other in s["others"]:
        shown = chkpt(["show", other], env, work)
        no_traceback("show other", shown, problems)
        if shown.returncode != 0 or not shown.stdout.startswith(f"run {other}"):
            problems.append(f"show {other}: exit {shown.returncode}: {shown.stderr[-200:]!r}")

    shown = chkpt(["show", bad], env, work)
    no_traceback("show damaged", shown, problems)
    lines = shown.stderr.strip().splitlines()
    if shown.returncode != 1:
        problems.append(f"show damaged: exit status {shown.returncode}")
    if len(lines) != 1 or not lines[0].startswith("chkpt:") or fragment not in lines[0]:
        problems.append(f"show damaged: stderr does not name {fragment!r}: {shown.stderr[-300:]!r}")

    others_load(s, env, "before gc", problems)

    dry = chkpt(["gc", "--dry-run"], env, work)
    no_traceback("gc --dry-run", dry, problems)
    if dry.returncode != 0:
        problems.append(f"gc --dry-run: exit status {dry.returncode}")
    if not (s["root"] / "runs" / bad).exists():
        problems.append("gc --dry-run: removed the damaged run")

    collected = chkpt(["gc"], env, work)
    no_traceback("gc", collected, problems)
    if collected.returncode != 0:
        problems.append(f"gc: exit status {collected.returncode}")
    if (s["root"] / "runs" / bad).exists():
        problems.append("gc: the damaged run is still there")
    for other in s["others"]:
        if not (s["root"] / "runs" / other).is_dir():
            problems.append(f"gc: removed the undamaged run {other}")
    others_load(s, env, "after gc", problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("damage", sorted(BLOB_DAMAGE))
def test_a_damaged_blob_fails_only_what_needs_it_and_gc_clears_it(damage, store, env):
    s, work, bad = store, store["work"], store["damaged"]
    fragment = BLOB_DAMAGE[damage](s, s["root"] / "runs" / bad)
    problems: list[str] = []
    listed = chkpt(["ls"], env, work)
    no_traceback("ls", listed, problems)
    if listed.returncode != 0 or not all(r in listed.stdout for r in [bad, *s["others"]]):
        problems.append(f"ls: {listed.returncode} {listed.stdout!r}")
    manifest = json.loads(manifest_paths(s["root"] / "runs" / bad)[0].read_text())
    needing = [e["name"] for e in manifest["variables"] if any(d.startswith(fragment) for d in blob_refs(
        {"variables": [e]}))]
    for name in needing:
        loaded = python(["-c", f"import chkpt; chkpt.load({name!r}, run={bad!r})"], env, work)
        last = loaded.stderr.strip().splitlines()[-1]
        if loaded.returncode == 0 or not last.startswith("chkpt.store.") or fragment[:2] not in last:
            problems.append(f"load {name}: {loaded.returncode} {last!r}")
    exported = chkpt(["export", bad, *needing, "--to", str(work / "out")], env, work)
    no_traceback("export", exported, problems)
    if exported.returncode != 1 or not exported.stderr.startswith("chkpt:"):
        problems.append(f"export: {exported.returncode} {exported.stderr!r}")
    others_load(s, env, "before gc", problems)
    collected = chkpt(["gc"], env, work)
    no_traceback("gc", collected, problems)
    if collected.returncode != 0 or fragment[:2] not in collected.stderr:
        problems.append(f"gc does not report the damage: {collected.stderr!r}")
    leftover = s["root"] / "blobs" / (fragment if len(fragment) == 2 else f"{fragment[:2]}/{fragment[2:]}")
    if leftover.exists():
        problems.append("gc left the damaged entry in place")
    others_load(s, env, "after gc", problems)
    rerun = python(["data.py", "2"], env, work)  # the same data is stored again, whole
    if rerun.returncode != 0 or rerun.stderr:
        problems.append(f"a new run of the same data: {rerun.stderr!r}")
    assert not problems, "\n".join(problems)


# -- gc trusts the checkpoint files, not a record's summary of them ---------------------------------------

def _lie(change):
    def damage(meta: dict) -> dict:
        change(meta["summary"])
        return meta
    return damage


SUMMARY_LIES = {
    "no_blobs": _lie(lambda summary: summary.update(blobs={}, compressed={})),
    "one_blob": _lie(lambda summary: summary.update(blobs=dict(list(summary["blobs"].items())[:1]))),
    "other_blobs": _lie(lambda summary: summary.update(blobs={"ab" * 16: 10})),
}


@pytest.mark.parametrize("lie", sorted(SUMMARY_LIES))
def test_gc_deletes_only_what_no_checkpoint_file_refers_to_whatever_a_summary_says(lie, store, env):
    """A run record whose summary omits data its intact checkpoint files need (a bug, an edit)
    costs nothing: gc reads the checkpoint files."""
    s = store
    run_dir = s["root"] / "runs" / s["damaged"]
    edit_run_json(SUMMARY_LIES[lie])(s, run_dir)
    old = time.time() - 2 * 86400
    for blob in (s["root"] / "blobs").rglob("*"):
        os.utime(blob, (old, old))  # past every grace period
    collected = chkpt(["gc"], env, s["work"])
    assert collected.returncode == 0, collected.stderr
    problems: list[str] = []
    others_load(dict(s, others={**s["others"], s["damaged"]: 2}), env, "after gc", problems)
    assert not problems, "\n".join(problems)
