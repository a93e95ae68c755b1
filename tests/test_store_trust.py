"""What the local store trusts: only the user's own files, never a link, never a foreign directory.

Runs as root in CI, so another user is real: files are handed to uid 4242 with os.chown.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from chkpt import records
from chkpt.store import Damaged, Store, StoreError, Untrusted, layout
from conftest import CHKPT, PYTHON, python, write

OTHER = 4242
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to make files of another user")


def make_store(root: Path) -> tuple[Store, str, dict]:
    """A store with one finished run and one checkpoint that refers to one blob."""
    store = Store(str(root))
    run = store.create_run(records.new_run(script="/w/job.py", argv=["job.py"], started=1.0))
    ref, _ = store.put_blob(b"x" * 5000)
    manifest = {"trigger": "exit", "time": 2.0, "variables": [
        {"name": "data", "type": "bytes", "scope": "global", "size": 5000, "pickle": ref, "buffers": []}]}
    run.add_checkpoint(manifest, run.reserve_index())
    run.meta.update(status="finished", ended=3.0)
    run.save_meta()
    run.close()
    return Store(str(root)), run.run_id, manifest["variables"][0]["pickle"]


def test_a_store_is_made_private_in_a_missing_or_empty_directory(tmp_path):
    for root in (tmp_path / "missing" / "store", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        store, run_id, blob = make_store(root)
        assert store.read_run(run_id)["status"] == "finished"
        assert store.read_blob(blob["hash"], blob["size"]) == b"x" * 5000
        for directory in ("blobs", "runs", "tmp"):
            assert stat.S_IMODE((root / directory).stat().st_mode) == 0o700


def test_a_non_empty_directory_that_is_not_a_store_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    os.chmod(tmp_path, 0o755)
    before = sorted((p.name, p.stat().st_mode) for p in tmp_path.iterdir()), tmp_path.stat().st_mode
    with pytest.raises(StoreError, match="not empty and not a chkpt store"):
        Store(str(tmp_path)).create()
    assert (sorted((p.name, p.stat().st_mode) for p in tmp_path.iterdir()), tmp_path.stat().st_mode) == before


@as_root
def test_a_store_of_another_user_is_never_read(tmp_path):
    store, run_id, blob = make_store(tmp_path / "store")
    os.chown(tmp_path / "store", OTHER, OTHER)
    for read in (store.run_ids, lambda: store.read_run(run_id), lambda: store.read_blob(blob["hash"], blob["size"]),
                 Store(str(tmp_path / "store")).create):
        with pytest.raises(Untrusted, match=f"belongs to uid {OTHER}"):
            read()


@as_root
@pytest.mark.parametrize("part", ["run directory", "run record", "manifest", "blob", "blob directory"])
def test_a_part_another_user_owns_is_refused(tmp_path, part):
    store, run_id, blob = make_store(tmp_path / "store")
    paths = {"run directory": store.path(layout.run_dir(run_id)), "run record": store.path(layout.run_record(run_id)),
             "manifest": store.path(layout.manifest(run_id, 1)), "blob": store.path(layout.blob(blob["hash"])),
             "blob directory": Path(store.path(layout.blob(blob["hash"]))).parent}
    os.chown(paths[part], OTHER, OTHER)
    read = {"run directory": lambda: store.read_run(run_id), "run record": lambda: store.read_run(run_id),
            "manifest": lambda: store.read_checkpoint(run_id, 1),
            "blob": lambda: store.read_blob(blob["hash"], blob["size"]),
            "blob directory": lambda: store.read_blob(blob["hash"], blob["size"])}[part]
    with pytest.raises(Untrusted, match=f"uid {OTHER}"):
        read()


@pytest.mark.parametrize("bits", [stat.S_IWGRP, stat.S_IWOTH])
def test_what_others_can_write_is_refused(tmp_path, bits):
    store, _, blob = make_store(tmp_path / "store")
    path = store.path(layout.blob(blob["hash"]))
    os.chmod(path, 0o600 | bits)
    with pytest.raises(Untrusted, match="writable by other users"):
        store.read_blob(blob["hash"], blob["size"])
    os.chmod(tmp_path / "store", 0o700 | bits)
    with pytest.raises(Untrusted, match="writable by other users"):
        Store(str(tmp_path / "store")).run_ids()


def test_a_link_inside_the_store_is_never_followed(tmp_path):
    store, run_id, _ = make_store(tmp_path / "store")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(Path(store.path(layout.run_record(run_id))).read_bytes())
    os.unlink(Path(store.path(layout.run_record(run_id))))
    os.symlink(elsewhere, Path(store.path(layout.run_record(run_id))))
    with pytest.raises(Untrusted, match="symbolic link"):
        store.read_run(run_id)


@as_root
def test_the_store_path_is_not_reached_through_another_users_link(tmp_path):
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "store"
    link.symlink_to(target)
    os.chown(link, OTHER, OTHER, follow_symlinks=False)
    with pytest.raises(Untrusted, match=f"symbolic link of uid {OTHER}"):
        Store(str(link)).create()
    assert list(target.iterdir()) == []


def test_a_link_of_the_users_own_to_the_store_is_fine(tmp_path):
    make_store(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert len(Store(str(tmp_path / "link")).run_ids()) == 1


@pytest.mark.parametrize("damage", ["checkpoints is a file", "blob is a directory", "run record is a directory"])
def test_a_file_where_a_directory_belongs_and_the_reverse_is_damage(tmp_path, damage):
    store, run_id, blob = make_store(tmp_path / "store")
    if damage == "checkpoints is a file":
        checkpoints = Path(store.path(layout.checkpoints(run_id)))
        for child in checkpoints.iterdir():
            child.unlink()
        checkpoints.rmdir()
        checkpoints.write_text("")
        with pytest.raises(Damaged, match="not a directory"):
            store.checkpoint_indexes(run_id)
    elif damage == "blob is a directory":
        path = Path(store.path(layout.blob(blob["hash"])))
        path.unlink()
        path.mkdir()
        with pytest.raises(Damaged, match="not a file"):
            store.read_blob(blob["hash"], blob["size"])
        assert not store.has_blob(blob["hash"], blob["size"])
    else:
        record = Path(store.path(layout.run_record(run_id)))
        record.unlink()
        record.mkdir()
        with pytest.raises(Damaged, match="not a file"):
            store.read_run(run_id)


def test_a_damaged_record_names_its_file_and_field(tmp_path):
    store, run_id, _ = make_store(tmp_path / "store")
    Path(store.path(layout.run_record(run_id))).write_text('{"id": "x", "script": "/a", "argv": [], '
                                                        '"started": 1, "status": 5}')
    with pytest.raises(Damaged, match=r"run\.json is damaged \(field 'status' should be one of"):
        store.read_run(run_id)


# -- a FIFO where a store file belongs hangs nobody --------------------------------------------------------

FIFO_JOB = "import sys, numpy as np\ndata = np.arange(50_000.0) + len(sys.argv)\nprint('ok')\n"


def _fifo_targets(store: Store, run_id: str) -> dict[str, str]:
    manifest = store.read_checkpoint(run_id, store.checkpoint_indexes(run_id)[-1])
    [data] = [v for v in manifest["variables"] if v["name"] == "data"]
    return {"blob": layout.blob(records.blob_key(records.file_ref(records.variable_refs(data)[-1]))),
            "manifest": layout.manifest(run_id, manifest["index"]), "run record": layout.run_record(run_id),
            "store marker": layout.MARKER, "usage": layout.USAGE, "run lock": layout.run_lock(run_id),
            "gc lock": layout.GC_LOCK, "pin": layout.pin_marker(run_id)}


@pytest.mark.parametrize("target", ["blob", "manifest", "run record", "store marker", "usage", "run lock",
                                    "gc lock", "pin"])
def test_a_fifo_in_place_of_a_store_file_hangs_no_script_and_no_command(target, env, work):
    """Opening a FIFO for reading blocks until someone writes it (and for writing until someone
    reads): chkpt opens store files non-blocking and only reads regular files."""
    write(work, "job.py", FIFO_JOB)
    assert python(["job.py"], env, work).returncode == 0
    store = Store(env["CHKPT_DIR"])
    [run_id] = store.run_ids()
    path = store.path(_fifo_targets(store, run_id)[target])
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path, 0o600)
    loaded = f"import chkpt; print(float(chkpt.load('data', run={run_id!r}).sum()))"
    # readers first (a writer replaces what is not a regular file), each script with new data
    steps = {"ls": [CHKPT, "ls"], "show": [CHKPT, "show", run_id], "load": [PYTHON, "-c", loaded],
             "script": [PYTHON, "job.py", "x"], "gc": [CHKPT, "gc"], "script again": [PYTHON, "job.py", "x", "y"]}
    for step, args in steps.items():
        try:
            done = subprocess.run(args, env=dict(env, CHKPT="0") if step == "load" else env, cwd=work,
                                  capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{step} hangs on a FIFO in place of the {target}")
        if step != "load":  # a Python API call: its error is a traceback of the caller's
            assert all(line.startswith("chkpt:") for line in done.stderr.splitlines()), (step, done.stderr)
        if step.startswith("script"):
            assert (done.returncode, done.stdout) == (0, "ok\n"), (step, done.stderr)


# -- the store root is private whatever the umask -----------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o002, 0o022, 0o077])
@pytest.mark.parametrize("user_config", [True, False])
def test_the_default_store_is_made_private_whatever_the_umask(umask, user_config, env, work):
    """With a user config present, its parsed copy is cached in the default store's folder before
    the store exists; whoever makes that folder, the store is 0700 and every run saves."""
    del env["CHKPT_DIR"]
    if user_config:
        config = Path(env["XDG_CONFIG_HOME"], "chkpt", "config.toml")
        config.parent.mkdir(parents=True)
        config.write_text('interval = "10m"\n')
    write(work, "job.py", FIFO_JOB)
    for _ in range(2):
        done = subprocess.run([PYTHON, "job.py"], env=env, cwd=work, capture_output=True, text=True,
                              preexec_fn=lambda: os.umask(umask), timeout=120)
        assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    root = Path(env["XDG_CACHE_HOME"], "chkpt")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    store = Store(str(root))
    assert len(store.run_ids()) == 2
    for folder in ("blobs", "runs", "tmp", *(f"runs/{run}" for run in store.run_ids())):
        assert stat.S_IMODE((root / folder).stat().st_mode) == 0o700, folder
    for path in root.rglob("*"):
        if path.is_file() and "parsed-config" not in path.parts:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
