"""A store another user owns or can write is refused and never unpickled, followed or modified."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
from pathlib import Path

import pytest
import xxhash

from conftest import chkpt, python, runs, write

OTHER = 4242

pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="needs root to own files as a second uid")

GOOD = "import numpy as np\ny = np.arange(30_000.0)\nprint('good done')\n"
BAD = "import numpy as np\nx = np.arange(20_000.0).reshape(100, 200)\nprint('bad done')\n"


class Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def chown_tree(path: Path, uid: int = OTHER) -> None:
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(path)], check=True)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with its mode, owner and (for files) bytes."""
    found = {}
    for base, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(base, name)
            info = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, content)
    return found


def chkpt_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("chkpt:")]


def warning_problem(result, *fragments) -> str | None:
    """What is wrong, if anything, with `result`'s stderr: it must be exactly one `chkpt:`
    line naming each fragment, and no traceback."""
    lines = result.stderr.strip().splitlines()
    if "Traceback" in result.stderr or len(lines) != 1 or not lines[0].startswith("chkpt:"):
        return f"stderr is not one chkpt: line: {result.stderr[-300:]!r}"
    missing = [f for f in fragments if f not in lines[0]]
    return f"{lines[0]!r} does not name {missing}" if missing else None


def refusal_problem(label: str, result, *fragments) -> str | None:
    """What is wrong with how a reader refused: the CLI says it in one `chkpt:` line; the
    Python API raises chkpt's error, whose message (the last line Python prints) says it."""
    if label != "load":
        return warning_problem(result, *fragments)
    last = (result.stderr.strip().splitlines() or [""])[-1]
    if not last.startswith(("chkpt.store.", "chkpt.api.")):
        return f"the API did not raise chkpt's error: {result.stderr[-300:]!r}"
    missing = [f for f in fragments if f not in last]
    return f"{last!r} does not name {missing}" if missing else None


def assert_one_warning(result, *fragments) -> str:
    problem = warning_problem(result, *fragments)
    assert problem is None, problem
    return result.stderr.strip()


@pytest.fixture
def store(env, work, tmp_path):
    """Two real runs, good.py then bad.py; a pickle payload planted under a blob that bad.py's
    manifest names for `x` (hash and size fixed up, so only ownership/permissions betray it)."""
    write(work, "good.py", GOOD)
    write(work, "bad.py", BAD)
    assert python(["good.py"], env, work).returncode == 0
    assert python(["bad.py"], env, work).returncode == 0
    good, bad = sorted(runs(env, work), key=lambda r: r["started"])
    root = Path(env["CHKPT_DIR"])
    marker = tmp_path / "pwned-marker"
    payload = pickle.dumps(Payload(f"touch {marker}"), protocol=5)
    digest = xxhash.xxh3_128_hexdigest(payload)
    blob = root / "blobs" / digest[:2] / digest[2:]
    blob.parent.mkdir(mode=0o700, exist_ok=True)
    blob.write_bytes(payload)
    blob.chmod(0o600)
    for manifest_path in sorted((root / "runs" / bad["id"] / "checkpoints").glob("*.json")):
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["variables"]:
            if entry["name"] == "x":
                entry["pickle"] = {"hash": digest, "size": len(payload)}
                entry["buffers"] = []
        manifest_path.write_text(json.dumps(manifest))
    return {"root": root, "good": good["id"], "bad": bad["id"], "blob": blob, "marker": marker,
            "work": work}


LOAD = "import chkpt; value = chkpt.load({name!r}, run={run!r}); print(type(value).__name__)"


def hostile_commands(s, env, tmp_path):
    """Every reader of the store, aimed at the planted run: (label, result) pairs."""
    work = s["work"]
    yield "ls", chkpt(["ls"], env, work)
    yield "show", chkpt(["show", "latest"], env, work)
    yield "show NAME", chkpt(["show", "latest", "x"], env, work)
    yield "export", chkpt(["export", "latest", "--to", str(tmp_path / "exported")], env, work)
    yield "shell", chkpt(["shell", "latest"], env, work, stdin="print(1)\n")
    yield "load", python(["-c", LOAD.format(name="x", run="latest")], env, work)


OWNER_WORDS = ("another user", "owner", "owned", "belongs", str(OTHER))
WRITABLE_WORDS = ("writable", "permission", "mode")


def names_a_reason(line: str, words) -> bool:
    return any(word in line for word in words)


# -- the whole store belongs to someone else, or others can write it -------------------------

def make_store_other_owned(s):
    chown_tree(s["root"])


def make_store_group_writable(s):
    s["root"].chmod(0o770)


def make_store_other_writable(s):
    s["root"].chmod(0o707)


WHOLE_STORE = {"owned_by_other_user": (make_store_other_owned, OWNER_WORDS),
               "group_writable": (make_store_group_writable, WRITABLE_WORDS),
               "other_writable": (make_store_other_writable, WRITABLE_WORDS)}


@pytest.mark.parametrize("how", sorted(WHOLE_STORE))
def test_a_hostile_store_is_refused_by_every_reader(how, store, env, tmp_path):
    damage, words = WHOLE_STORE[how]
    damage(store)
    mode_before = store["root"].stat().st_mode
    problems = []
    for label, result in hostile_commands(store, env, tmp_path):
        if store["marker"].exists():
            problems.append(f"{label}: unpickled the planted payload")
            store["marker"].unlink()
        problem = refusal_problem(label, result, str(store["root"]))
        if problem is None and not names_a_reason(result.stderr, words):
            problem = f"gives no reason: {result.stderr.strip()!r}"
        if problem:
            problems.append(f"{label}: {problem}")
        if label == "ls" and result.returncode == 0 and store["bad"] in result.stdout:
            problems.append("ls: lists the hostile run")
        if label != "ls" and result.returncode == 0:
            problems.append(f"{label}: exits 0")
    assert not problems, "\n".join(problems)
    assert store["root"].stat().st_mode == mode_before  # not "repaired" behind the user's back


# -- one run, or one blob, is not ours -------------------------------------------------------

def make_run_other_owned(s):
    chown_tree(s["root"] / "runs" / s["bad"])


def make_run_group_writable(s):
    (s["root"] / "runs" / s["bad"]).chmod(0o770)


def make_run_other_writable(s):
    (s["root"] / "runs" / s["bad"]).chmod(0o707)


def make_blob_other_owned(s):
    os.chown(s["blob"], OTHER, OTHER)


def make_blob_other_writable(s):
    s["blob"].chmod(0o606)


def make_blob_group_writable(s):
    s["blob"].chmod(0o660)


ONE_PART = {"run_owned_by_other_user": (make_run_other_owned, True),
            "run_group_writable": (make_run_group_writable, True),
            "run_other_writable": (make_run_other_writable, True),
            "blob_owned_by_other_user": (make_blob_other_owned, False),
            "blob_group_writable": (make_blob_group_writable, False),
            "blob_other_writable": (make_blob_other_writable, False)}


@pytest.mark.parametrize("how", sorted(ONE_PART))
def test_a_hostile_run_or_blob_is_refused_and_the_rest_still_loads(how, store, env, tmp_path):
    damage, whole_run = ONE_PART[how]
    damage(store)
    work = store["work"]
    problems = []
    for label, result in hostile_commands(store, env, tmp_path):
        if store["marker"].exists():
            problems.append(f"{label}: unpickled the planted payload")
            store["marker"].unlink()
        if "Traceback" in result.stderr and label != "load":
            problems.append(f"{label}: traceback {result.stderr[-200:]!r}")
        if label == "ls":
            if result.returncode != 0 or store["good"] not in result.stdout:
                problems.append("ls: the other run is not listed")  # it must still list
            if whole_run and (problem := warning_problem(result, store["bad"])):
                problems.append(f"ls: {problem}")
            continue
        if label == "show" and not whole_run:
            continue  # the run itself is fine; whatever loads the planted value must refuse
        if result.returncode == 0:
            problems.append(f"{label}: exits 0")
        if problem := refusal_problem(label, result):
            problems.append(f"{label}: {problem}")
    good = python(["-c", LOAD.format(name="y", run=store["good"])], env, work)
    if (good.returncode, good.stdout, good.stderr) != (0, "ndarray\n", ""):
        problems.append(f"the other run does not load: {good.stderr[-200:]!r}")
    shown = chkpt(["show", store["good"]], env, work)
    if shown.returncode != 0 or "Traceback" in shown.stderr:
        problems.append(f"the other run does not show: {shown.stderr[-200:]!r}")
    if store["marker"].exists():
        problems.append("the planted payload ran")
    assert not problems, "\n".join(problems)


# -- CHKPT_DIR is a symlink another user planted ---------------------------------------------

SCRIPT = "import numpy as np\ndata = np.arange(40_000.0)\nprint('result', int(data.sum()))\n"


@pytest.mark.parametrize("target_owner", ["other_user", "us"])
def test_a_symlink_planted_as_the_store_is_not_followed(target_owner, env, work, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    target.chmod(0o755)
    if target_owner == "other_user":
        chown_tree(target)
    link = shared / "store"
    link.symlink_to(target)
    os.lchown(link, OTHER, OTHER)
    env["CHKPT_DIR"] = str(link)
    problems = left_alone_problems(target, link, env, work)
    assert not problems, "\n".join(problems)


def left_alone_problems(directory: Path, store_path: Path, env, work) -> list[str]:
    """A script run and `chkpt ls` with CHKPT_DIR=store_path leave `directory` as it was, the
    script's output unchanged, with one `chkpt:` warning each."""
    before = tree(directory)
    write(work, "prog.py", SCRIPT)
    plain = python(["prog.py"], dict(env, CHKPT="0"), work)
    traced = python(["prog.py"], env, work)
    problems = []
    if (traced.returncode, traced.stdout) != (plain.returncode, plain.stdout):
        problems.append(f"script: {traced.returncode, traced.stdout} instead of "
                        f"{plain.returncode, plain.stdout}")
    if problem := warning_problem(traced, str(store_path)):
        problems.append(f"script: {problem}")
    if tree(directory) != before:
        problems.append(f"script: changed the directory: {sorted(set(tree(directory)) ^ set(before))}, "
                        f"mode {tree(directory)['.'][0]:o} (was {before['.'][0]:o})")
    before = tree(directory)
    listed = chkpt(["ls"], env, work)
    if "Traceback" in listed.stderr:
        problems.append("ls: traceback")
    said = [line for line in (listed.stdout + listed.stderr).splitlines() if line.startswith("chkpt:")
            or "not a chkpt store" in line]
    if len(said) != 1:
        problems.append(f"ls: not one line about it: {listed.stdout + listed.stderr!r}")
    if tree(directory) != before:
        problems.append("ls: changed the directory")
    return problems


# -- CHKPT_DIR is an existing directory that is not a store ----------------------------------

def test_a_directory_that_is_not_a_store_is_left_alone(env, work, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("meeting at 10\n")
    (notes / "sub").mkdir()
    (notes / "sub" / "data.csv").write_text("a,b\n1,2\n")
    notes.chmod(0o755)
    env["CHKPT_DIR"] = str(notes)
    problems = []
    listed = chkpt(["ls"], env, work)  # before any script ran with it
    said = [line for line in (listed.stdout + listed.stderr).splitlines()
            if "not a chkpt store" in line]
    if len(said) != 1 or str(notes) not in said[0]:
        problems.append(f"ls does not say it is not a chkpt store: {listed.stdout + listed.stderr!r}")
    problems += left_alone_problems(notes, notes, env, work)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("state", ["empty", "missing"])
def test_an_empty_or_missing_directory_becomes_a_private_store(state, env, work, tmp_path):
    root = tmp_path / "fresh"
    if state == "empty":
        root.mkdir()
        root.chmod(0o755)
    env["CHKPT_DIR"] = str(root)
    write(work, "prog.py", SCRIPT)
    traced = python(["prog.py"], env, work)
    assert (traced.returncode, traced.stderr) == (0, "")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    [only] = runs(env, work)
    assert only["status"] == "finished" and only["checkpoints"] >= 1


# -- config files another user owns or can write are refused, not applied ------------------------

PLANTED = 'exclude_names = ["*"]\n'  # applied, it would make every run save nothing, silently


def plant_project_file(name: str, mode: int = 0o644, uid: int = 0, gid: int = 0):
    def plant(env, work) -> Path:
        path = work / name
        path.write_text(("[tool.chkpt]\n" if name == "pyproject.toml" else "") + PLANTED)
        path.chmod(mode)
        os.chown(path, uid, gid)
        return path
    return plant


def plant_user_file(env, work) -> Path:
    path = Path(env["XDG_CONFIG_HOME"], "chkpt", "config.toml")
    path.parent.mkdir(parents=True)
    path.write_text(PLANTED)
    os.chown(path, OTHER, OTHER)
    return path


def plant_link(env, work) -> Path:
    """Another user's symbolic link, as chkpt.toml, to a TOML file of ours."""
    ours = work / "notes.toml"
    ours.write_text(PLANTED)
    link = work / "chkpt.toml"
    link.symlink_to(ours)
    os.lchown(link, OTHER, OTHER)
    return link


def plant_cache(uid: int, mode: int):
    """The parsed-config cache of a harmless chkpt.toml, made to hold the planted settings."""
    def plant(env, work) -> Path:
        import marshal

        from chkpt import config as config_module

        project = work / "chkpt.toml"
        project.write_text("interval = 60\n")
        info = project.stat()
        cache = Path(config_module._parsed_cache_path(str(project)))
        cache.parent.mkdir(parents=True, mode=0o700)
        cache.write_bytes(marshal.dumps(((info.st_mtime_ns, info.st_size), {"exclude_names": ["*"]})))
        cache.chmod(mode)
        os.chown(cache, uid, uid)
        return cache
    return plant


CONFIG_PLANTS = {
    "chkpt.toml of another user": (plant_project_file("chkpt.toml", uid=OTHER, gid=OTHER), OWNER_WORDS),
    "chkpt.toml writable by others": (plant_project_file("chkpt.toml", mode=0o646), WRITABLE_WORDS),
    "chkpt.toml writable by a group not one's own": (plant_project_file("chkpt.toml", mode=0o664, gid=OTHER),
                                                     WRITABLE_WORDS),
    "pyproject.toml of another user": (plant_project_file("pyproject.toml", uid=OTHER, gid=OTHER), OWNER_WORDS),
    "user config.toml of another user": (plant_user_file, OWNER_WORDS),
    "symbolic link of another user": (plant_link, ("symbolic link", str(OTHER))),
    "config cache of another user": (plant_cache(OTHER, 0o600), OWNER_WORDS),
    "config cache writable by others": (plant_cache(0, 0o606), WRITABLE_WORDS),
}


@pytest.mark.parametrize("how", sorted(CONFIG_PLANTS))
def test_a_config_file_another_user_could_have_written_is_refused_in_one_line(how, env, work):
    plant, words = CONFIG_PLANTS[how]
    path = plant(env, work)
    write(work, "prog.py", SCRIPT)
    plain = python(["prog.py"], dict(env, CHKPT="0"), work)
    traced = python(["prog.py"], env, work)
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
    line = assert_one_warning(traced, str(path))
    assert names_a_reason(line, words), line
    [run] = runs(env, work)
    shown = json.loads(chkpt(["show", run["id"], "--json"], env, work).stdout)
    assert [v["name"] for v in shown["checkpoints"][-1]["variables"]] == ["data"]  # the planted exclude was not applied


def test_a_config_file_group_writable_in_ones_private_group_applies(env, work):
    import grp
    import pwd

    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid())
    if group.gr_name != me.pw_name or set(group.gr_mem) - {me.pw_name}:
        pytest.skip(f"{me.pw_name}'s primary group {group.gr_name} is not a private group")
    plant_project_file("chkpt.toml", mode=0o664, gid=os.getgid())(env, work)  # as under umask 002
    write(work, "prog.py", SCRIPT)
    traced = python(["prog.py"], env, work)
    assert (traced.returncode, traced.stderr) == (0, "")
    for run in runs(env, work):  # exclude_names = ["*"] applied: nothing saved (or no run listed at all)
        shown = json.loads(chkpt(["show", run["id"], "--json"], env, work).stdout)
        assert not [v for c in shown["checkpoints"] for v in c["variables"]]


# -- chkpt export into a shared folder: nothing planted there is followed or overwritten ---------

EXPORTED = """
import numpy as np
import pandas as pd
arr = np.arange(3000.0)
frame = pd.DataFrame({"a": np.arange(2000.0)})
settings = {"lr": 0.1, "layers": list(range(400))}  # over min_size: the exit checkpoint keeps it
"""


@pytest.fixture
def exported_run(env, work):
    write(work, "exp.py", EXPORTED)
    assert python(["exp.py"], env, work).returncode == 0
    return work


@pytest.fixture
def shared(tmp_path) -> Path:
    """A folder like /tmp: root's, sticky, everyone may write."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


def planted_link(at: Path, target: Path) -> None:
    at.symlink_to(target)
    os.lchown(at, OTHER, OTHER)


def test_export_never_follows_a_link_another_user_planted_in_a_shared_folder(exported_run, env, shared, tmp_path):
    precious = {name: tmp_path / f"precious-{name}" for name in ("arr.npy", "settings.json", "frame.parquet")}
    for name, target in precious.items():
        target.write_text("mine\n")
        planted_link(shared / name, target)
    mine_before = tree(tmp_path / "home")
    result = chkpt(["export", "latest", "--to", str(shared)], env, exported_run)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = chkpt_lines(result.stderr)
    assert len(lines) == 4 and all("belongs to uid 4242" in line for line in lines[:3]), lines
    assert all(target.read_text() == "mine\n" for target in precious.values())  # nothing written through a link
    assert all((shared / name).is_symlink() for name in precious)  # and their links left as they were
    assert tree(tmp_path / "home") == mine_before
    assert sorted(p.name for p in shared.iterdir()) == sorted(precious)  # no temporary file left behind


def test_export_does_not_replace_another_users_file_but_writes_the_rest(exported_run, env, shared):
    theirs = shared / "arr.npy"
    theirs.write_text("theirs\n")
    os.chown(theirs, OTHER, OTHER)
    result = chkpt(["export", "latest", "arr", "settings", "--to", str(shared)], env, exported_run)
    assert result.returncode == 1
    assert [line for line in chkpt_lines(result.stderr) if "arr.npy" in line] == [
        f"chkpt: {theirs} exists and belongs to uid {OTHER}; not replaced"]
    assert theirs.read_text() == "theirs\n"
    assert json.loads((shared / "settings.json").read_text()) == {"lr": 0.1, "layers": list(range(400))}


@pytest.mark.parametrize("planted", ["link", "folder"])
def test_export_refuses_a_target_folder_another_user_planted(planted, exported_run, env, shared, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    target = shared / "out"
    if planted == "link":
        planted_link(target, mine)
    else:
        target.mkdir()
        target.chmod(0o777)
        os.chown(target, OTHER, OTHER)
    before = tree(mine)
    result = chkpt(["export", "latest", "--to", str(target)], env, exported_run)
    assert result.returncode == 2
    assert_one_warning(result, str(target), str(OTHER))
    assert tree(mine) == before
    assert planted == "link" or list(target.iterdir()) == []


def test_export_replaces_its_own_files_and_links_without_following_them(exported_run, env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.npy"
    elsewhere.write_text("keep\n")
    (out / "arr.npy").symlink_to(elsewhere)
    (out / "settings.json").write_text("old\n")
    for _ in range(2):  # a second export replaces the first's files
        result = chkpt(["export", "latest", "arr", "settings", "--to", str(out)], env, exported_run)
        assert (result.returncode, result.stderr) == (0, "")
    import numpy as np

    np.testing.assert_array_equal(np.load(out / "arr.npy"), np.arange(3000.0))
    assert not (out / "arr.npy").is_symlink() and elsewhere.read_text() == "keep\n"
    assert sorted(p.name for p in out.iterdir()) == ["arr.npy", "settings.json"]


def test_a_fifo_another_user_plants_as_a_store_file_is_never_written(env, work):
    """chkpt appends to the store's usage file at each commit: a FIFO planted there (with a reader
    waiting on it) is refused, never written, and the script runs as without chkpt."""
    write(work, "job.py", "import sys, numpy as np\ndata = np.arange(40_000.0) * len(sys.argv)\nprint('done')\n")
    assert python(["job.py"], env, work).returncode == 0
    usage = Path(env["CHKPT_DIR"], "usage")
    usage.unlink(missing_ok=True)
    os.mkfifo(usage, 0o600)
    os.chown(usage, OTHER, OTHER)
    reader = os.open(usage, os.O_RDONLY | os.O_NONBLOCK)
    try:
        plain = python(["job.py", "new"], dict(env, CHKPT="0"), work)
        traced = python(["job.py", "new"], env, work, timeout=60)
        try:
            written = os.read(reader, 4096)
        except BlockingIOError:
            written = b""
    finally:
        os.close(reader)
    assert written == b""
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
    assert len(chkpt_lines(traced.stderr)) <= 1 and "Traceback" not in traced.stderr
