"""A script crashes, then `chkpt ls`, `show`, `export`, `shell`, `gc`, `config`, `doctor` and
their error paths, against a store made by a real run of this venv's python (autoload .pth
installed): as the `chkpt` console script where the process matters (output to a pipe or a
terminal, stdin), else in this process through `cli.main`."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import BIN, CHKPT, chkpt, chkpt_json, python, run, runs, write

CRASHER = """
import numpy as np
import pandas as pd

arr = np.ones((1000, 10))
df = pd.DataFrame({"a": np.arange(2000.0), "b": np.arange(2000) % 7})
results = {"train": np.arange(3000.0), "test": np.zeros(1500)}
log = open(__file__)

def step(batch):
    arr = batch * 2
    raise ValueError("boom in step")

step(arr[:500])
"""
CRASH_LINE = 12  # `raise ValueError` above, after dedent


@pytest.fixture
def crashed(env, work):
    """A store with one crashed run of crash.py."""
    write(work, "crash.py", CRASHER)
    result = python(["crash.py"], env, work)
    assert result.returncode == 1 and "ValueError: boom in step" in result.stderr
    return work


def fine_run(env, work, name="fine.py"):
    write(work, name, "import numpy as np\nweights = np.arange(5000.0)\n")
    assert python([name], env, work).returncode == 0


def assert_user_error(result, *fragments, status=2):
    """One line on stderr naming the problem, no traceback, the given exit status."""
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def in_process_json(call, args: list[str], cwd):
    result = call([*args, "--json"], cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- ls --------------------------------------------------------------------------------------

def test_ls_json_contract_and_how_the_run_ended(env, crashed):
    [run] = runs(env, crashed)
    for key in ("id", "script", "status", "started", "checkpoints", "size"):
        assert key in run
    assert run["script"] == str(crashed / "crash.py")
    assert run["status"] == "crashed"
    assert run["exception"] == "ValueError: boom in step"
    assert run["crash_line"] == CRASH_LINE
    assert run["checkpoints"] == 1
    assert isinstance(run["started"], float) and run["duration"] >= 0
    assert run["size"] > 80_000  # arr alone is 80 kB
    assert 0 < run["stored"] <= run["size"]  # on disk, compressed where that pays


def test_ls_table_says_which_script_when_how_it_ended_and_space(env, crashed):
    fine_run(env, crashed)
    result = chkpt(["ls"], env, crashed)
    assert result.returncode == 0, result.stderr
    header, first, second, footer = result.stdout.splitlines()
    assert header.split() == ["RUN", "SCRIPT", "STARTED", "DURATION", "CKPTS", "SIZE", "STORED", "STATUS"]
    assert "fine.py" in first and "finished" in first and "just now" in first  # newest first
    assert "crash.py" in second
    assert f"crashed at crash.py:{CRASH_LINE} in step(): ValueError: boom in step" in second
    assert "KiB" in second
    assert footer.startswith("2 runs,") and "of data in" in footer
    assert "\x1b[" not in result.stdout  # not a terminal: no colour


def test_ls_filters_by_script_and_limits(env, crashed):
    fine_run(env, crashed)
    fine_run(env, crashed)
    assert [r["script"] for r in chkpt_json(["ls", "--script", "crash.py"], env, crashed)] == [
        str(crashed / "crash.py")]
    assert len(chkpt_json(["ls", "-n", "2"], env, crashed)) == 2
    assert "no runs matching --script other.py" in chkpt(["ls", "--script", "other.py"], env, crashed).stdout


def test_ls_of_an_empty_store(env, work):
    result = chkpt(["ls"], env, work)
    assert result.returncode == 0 and result.stdout.startswith("no runs in ")
    assert chkpt_json(["ls"], env, work) == []


def on_terminal(args, env, cwd) -> str:
    """What `chkpt ARGS` prints with its stdout and stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([CHKPT, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_unless_no_color(env, crashed):
    coloured = on_terminal(["ls"], env, crashed)
    assert "\x1b[31mcrashed at crash.py" in coloured  # a crash stands out in red
    plain = on_terminal(["ls"], dict(env, NO_COLOR="1"), crashed)
    assert "crashed at crash.py" in plain and "\x1b[" not in plain


# -- show ------------------------------------------------------------------------------------

def test_show_json_contract(env, crashed):
    shown = chkpt_json(["show", "latest"], env, crashed)
    assert shown["run"]["status"] == "crashed" and shown["run"]["checkpoints"] == 1
    [checkpoint] = shown["checkpoints"]
    for key in ("index", "trigger", "time", "file", "line", "variables", "skipped"):
        assert key in checkpoint
    assert checkpoint["trigger"] == "crash" and checkpoint["line"] == CRASH_LINE
    assert checkpoint["file"] == str(crashed / "crash.py")
    variables = {v["name"]: v for v in checkpoint["variables"]}
    assert variables["arr"]["shape"] == [1000, 10] and variables["arr"]["dtype"] == "float64"
    assert variables["df"]["type"] == "pandas.DataFrame" and variables["df"]["shape"] == [2000, 2]
    assert variables["results['train']"]["shape"] == [3000]
    assert variables["step:arr"]["shape"] == [500, 10]  # the local clashes with the global arr
    for variable in variables.values():
        assert {"name", "type", "size", "stored"} <= variable.keys()
        assert "pickle" not in variable and "buffers" not in variable  # store internals stay out
    [skipped] = [s for s in checkpoint["skipped"] if s["name"] == "log"]
    assert "open file" in skipped["reason"]


def test_show_lists_checkpoints_variables_and_what_was_skipped(env, crashed):
    result = chkpt(["show", "latest"], env, crashed)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"crashed at crash.py:{CRASH_LINE} in step(): ValueError: boom in step" in out
    assert "command  python crash.py" in out
    lines = out.splitlines()
    [crash_row] = [line for line in lines if line.startswith(">")]
    assert "crash" in crash_row and f"crash.py:{CRASH_LINE} in step()" in crash_row
    # the last column: how long the checkpoint stopped the program, as its manifest records it
    [header] = [line for line in lines if "TRIGGER" in line]
    assert header.split()[-1] == "PAUSE"
    pause = chkpt_json(["show", "latest"], env, crashed)["checkpoints"][-1]["pause"]
    assert crash_row.split()[-1] == (f"{pause * 1000:.0f}ms" if pause < 1 else f"{pause:.1f}s")
    [arr_row] = [line for line in lines if line.startswith("arr ")]
    assert arr_row.split()[:4] == ["arr", "numpy.ndarray", "1000x10", "float64"]
    assert "78.1 KiB" in arr_row or "78.2 KiB" in arr_row
    assert any(line.startswith("step:arr ") and "local of step" in line for line in lines)
    assert "skipped:" in out and any(line.split()[:1] == ["log"] for line in lines)


def test_show_previews_named_values(env, crashed):
    result = chkpt(["show", "latest", 'results["test"]', "df"], env, crashed)
    assert result.returncode == 0, result.stderr
    assert "results['test']  numpy.ndarray, 1500, float64" in result.stdout
    assert "array([0., 0., 0., ..., 0., 0., 0.]" in result.stdout
    assert "[2000 rows x 2 columns]" in result.stdout


def test_references(env, crashed, in_process):
    fine_run(env, crashed)
    crash_id = in_process_json(in_process, ["ls", "--script", "crash.py"], crashed)[0]["id"]
    fine_id = in_process_json(in_process, ["ls", "--script", "fine.py"], crashed)[0]["id"]

    def run_of(ref):
        return in_process_json(in_process, ["show", ref], crashed)["run"]["id"]

    assert run_of("latest") == fine_id
    assert run_of("latest:crash.py") == crash_id
    assert run_of("latest:" + str(crashed / "crash.py")) == crash_id
    assert run_of("crash.py") == crash_id
    assert run_of(crash_id[:5]) == crash_id
    assert run_of(f"{crash_id}@crash") == crash_id
    assert run_of("latest@exit") == fine_id
    chosen = in_process(["show", "latest:crash.py@1"], crashed).stdout
    assert f"checkpoint {crash_id}@1 — crash" in chosen


def test_unknown_run_checkpoint_or_variable_is_one_line_with_closest_matches(env, crashed, in_process):
    fine_run(env, crashed)
    assert_user_error(in_process(["show", "nosuchrun"], crashed), "no run 'nosuchrun'")
    assert_user_error(in_process(["show", "latest:crsh.py"], crashed), "no run of crsh.py", "closest: crash.py")
    assert_user_error(in_process(["show", "latest@crash"], crashed), "no crash checkpoint", "it has: exit")
    assert_user_error(in_process(["show", "latest:crash.py@7"], crashed), "no checkpoint 7")
    assert_user_error(in_process(["show", "crash.py", "reslts"], crashed),
                      "no variable 'reslts'", "closest: ", "results['train']")
    assert_user_error(in_process(["export", "crash.py", "nope", "arr"], crashed), "no variable 'nope'")
    assert_user_error(chkpt(["sho", "latest"], env, crashed), "unknown command 'sho'", "show")


def test_corrupt_store_files_are_reported_and_the_rest_still_listed(env, crashed):
    fine_run(env, crashed)
    store = env["CHKPT_DIR"]
    crash_id = chkpt_json(["ls", "--script", "crash.py"], env, crashed)[0]["id"]
    fine_id = chkpt_json(["ls", "--script", "fine.py"], env, crashed)[0]["id"]
    with open(os.path.join(store, "runs", crash_id, "run.json"), "w") as handle:
        handle.write('{"script": ')
    result = chkpt(["ls"], env, crashed)
    assert result.returncode == 0
    [damaged] = [line for line in result.stdout.splitlines() if line.startswith(crash_id)]
    assert damaged.split()[1:3] == ["?", "-"] and damaged.endswith("damaged")
    assert fine_id in result.stdout and "finished" in result.stdout
    [problem] = result.stderr.splitlines()
    assert "run.json is damaged" in problem and "Traceback" not in result.stderr

    manifest = os.path.join(store, "runs", fine_id, "checkpoints", "000001.json")
    with open(manifest, "w") as handle:
        handle.write("garbage")
    shown = chkpt(["show", fine_id], env, crashed)
    assert (shown.returncode, shown.stdout) == (1, "")  # nothing of that run can be read
    assert "000001.json is damaged" in shown.stderr and "Traceback" not in shown.stderr


def test_listing_reads_no_data_and_a_missing_blob_is_one_clear_line(env, crashed):
    before = chkpt_json(["ls"], env, crashed)
    shutil.rmtree(os.path.join(env["CHKPT_DIR"], "blobs"))
    assert chkpt_json(["ls"], env, crashed) == before
    assert chkpt(["show", "latest"], env, crashed).returncode == 0
    assert chkpt_json(["show", "latest"], env, crashed)["checkpoints"][0]["variables"]
    assert_user_error(chkpt(["export", "latest", "arr", "--to", "out"], env, crashed),
                      "is missing from", status=1)


# -- export ----------------------------------------------------------------------------------

def test_export_writes_files_other_tools_read(env, crashed):
    result = chkpt(["export", "latest@crash", "arr", "df", "results['train']", "--to", "out/x"],
                   env, crashed)
    assert result.returncode == 0, result.stderr
    out = crashed / "out" / "x"
    np.testing.assert_array_equal(np.load(out / "arr.npy"), np.ones((1000, 10)))
    np.testing.assert_array_equal(np.load(out / "results.train.npy"), np.arange(3000.0))
    expected = pd.DataFrame({"a": np.arange(2000.0), "b": np.arange(2000) % 7})
    pd.testing.assert_frame_equal(pd.read_parquet(out / "df.parquet"), expected)
    assert "df → out/x/df.parquet" in result.stdout
    assert sorted(os.listdir(out)) == ["arr.npy", "df.parquet", "results.train.npy"]


def test_export_everything_and_the_pickle_and_csv_fallback(env, work):
    write(work, "mixed.py", """
        import numpy as np, pandas as pd
        frame = pd.DataFrame({"mixed": [1, "two", 3.0] * 200})  # Parquet cannot type this column
        config = {"lr": 0.1, "layers": [64, 32], "name": "run"}
        series = pd.Series(np.arange(1000.0), name="s")
        raise RuntimeError("the crash checkpoint keeps small values like config too")
    """)
    python(["mixed.py"], env, work)
    result = chkpt(["load", "latest", "--to", "dump", "--json"], env, work)
    assert result.returncode == 0, result.stderr
    exported = {e["name"]: e["files"] for e in json.loads(result.stdout)["exported"]}
    assert exported["frame"] == ["dump/frame.pkl", "dump/frame.csv"]
    assert "Parquet cannot hold it" in result.stderr
    pd.testing.assert_frame_equal(pd.read_pickle(work / "dump/frame.pkl"),
                                  pd.DataFrame({"mixed": [1, "two", 3.0] * 200}))
    assert pd.read_csv(work / "dump/frame.csv", index_col=0)["mixed"].tolist()[:3] == ["1", "two", "3.0"]
    assert json.loads((work / "dump/config.json").read_text()) == {
        "lr": 0.1, "layers": [64, 32], "name": "run"}
    assert pd.read_parquet(work / "dump/series.parquet")["s"].sum() == np.arange(1000.0).sum()


# -- shell -----------------------------------------------------------------------------------

def test_shell_loads_every_variable_through_stdin(env, crashed):
    session = "\n".join([
        "print('shape', arr.shape, df.shape)",
        "print('local', ckpt['step:arr'].shape)",
        "print('nested', ckpt[\"results['train']\"].sum())",
        "print('batch', batch.shape)",
    ]) + "\n"
    result = chkpt(["shell", "latest@crash"], env, crashed, stdin=session)
    assert result.returncode == 0, result.stderr
    assert "shape (1000, 10) (2000, 2)" in result.stdout
    assert "local (500, 10)" in result.stdout
    assert f"nested {np.arange(3000.0).sum()}" in result.stdout
    assert "batch (500, 10)" in result.stdout  # batch is a view of arr, kept as itself
    assert "Traceback" not in result.stderr
    banner = result.stderr
    assert "checkpoint 1: crash at crash.py:12 in step(): ValueError: boom in step" in banner
    [bound] = [line for line in banner.splitlines() if line.startswith("variables: ")]
    assert {"arr", "df"} <= set(bound.removeprefix("variables: ").split(", "))
    assert "ckpt['step:arr']" in banner and "ckpt[\"results['train']\"]" in banner


def test_shell_of_an_unknown_run_is_a_user_error(crashed, in_process):
    assert_user_error(in_process(["shell", "ffffffff"], crashed), "no run 'ffffffff'")


# -- config, doctor, gc (help texts and parsing: test_cli_parsing.py) ------------------------------

def test_config_doctor_and_gc_have_json(env, work, in_process):
    fine_run(env, work)
    config = in_process_json(in_process, ["config"], work)
    assert config["dir"] == {"value": env["CHKPT_DIR"], "source": "env CHKPT_DIR"}
    assert config["interval"]["source"] == "default"
    doctor = in_process_json(in_process, ["doctor"], work)
    assert doctor["ok"] is True
    assert {c["topic"] for c in doctor["checks"]} >= {"python", "autoload", "store"}
    gc = in_process_json(in_process, ["gc", "--dry-run", "--max-size", "0"], work)
    assert gc["dry_run"] is True and len(gc["runs"]) == 1
    assert len(in_process_json(in_process, ["ls"], work)) == 1  # a dry run removes nothing
    human = in_process(["config"], work).stdout
    assert "max_store_size" in human and "20.0 GiB" in human and "env CHKPT_DIR" in human


def test_doctor_reports_autoload_switched_off(work, in_process, monkeypatch):
    monkeypatch.setenv("CHKPT", "0")
    result = in_process(["doctor"], work)
    assert result.returncode == 1
    assert "CHKPT=0 switches it off" in result.stdout


def test_console_scripts_run_main(env, work):
    assert chkpt(["--help"], env, work).returncode == 0
    result = run([str(BIN / "chkpt-gc"), "--dry-run", "--json"], env, work)
    assert result.returncode == 0 and json.loads(result.stdout)["dry_run"] is True
    result = python(["-m", "chkpt", "sho"], env, work)
    assert_user_error(result, "unknown command 'sho'; did you mean show?")


def test_a_preview_shows_dicts_in_their_own_order_cut_to_a_screenful():
    from chkpt.cli.listing import _preview

    records = [{"id": i, "user": f"u{i}", "value": 0.5, "tags": ["new"]} for i in range(100)]
    text = _preview(records)
    assert text.startswith("[{'id': 0, 'user': 'u0', 'value': 0.5, 'tags': ['new']}, {'id': 1,")
    assert len(text) <= 160 and _preview({}) == "{}"
    assert _preview(dict.fromkeys(reversed(range(30)), 0)) == "{" + ", ".join(
        f"{i}: 0" for i in range(29, 9, -1)) + ", ...}"


# -- one impossible number in a record damages that record, never the listing ------------------

def _set_field(path: str, field: str, literal: str) -> None:
    """Write `field` (dotted for a nested one) of the JSON file at `path` as the raw JSON number `literal`."""
    with open(path) as handle:
        record = json.load(handle)
    *parents, last = field.split(".")
    target = record
    for parent in parents:
        target = target[parent]
    target[last] = "@@NUMBER@@"
    with open(path, "w") as handle:
        handle.write(json.dumps(record).replace('"@@NUMBER@@"', literal))


@pytest.mark.parametrize(("where", "field"), [
    ("run", "started"), ("run", "ended"), ("run", "heartbeat"), ("run", "summary.last_time"),
    ("manifest", "time"), ("manifest", "pause"),
])
def test_an_impossible_number_in_a_record_damages_that_run_and_the_rest_still_list(where, field, env, crashed):
    fine_run(env, crashed)
    crash_id = chkpt_json(["ls", "--script", "crash.py"], env, crashed)[0]["id"]
    fine_id = chkpt_json(["ls", "--script", "fine.py"], env, crashed)[0]["id"]
    run_dir = os.path.join(env["CHKPT_DIR"], "runs", crash_id)
    path = os.path.join(run_dir, "run.json") if where == "run" else os.path.join(run_dir, "checkpoints", "000001.json")
    with open(path, "rb") as handle:
        original = handle.read()
    problems = []
    for literal in ("1e300", "NaN", "-Infinity", "1e400", "-1e12"):
        with open(path, "wb") as handle:
            handle.write(original)
        _set_field(path, field, literal)
        if where == "manifest":  # newer than the run's summary, which is then not used
            os.utime(path, (os.stat(run_dir + "/run.json").st_mtime + 5,) * 2)
        listed = chkpt(["ls"], env, crashed)
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:-1]}
        if listed.returncode != 0 or "Traceback" in listed.stderr:
            problems.append(f"{literal}: ls exits {listed.returncode}: {listed.stderr[-300:]!r}")
            continue
        if "finished" not in rows.get(fine_id, ""):
            problems.append(f"{literal}: the good run is not listed: {listed.stdout!r}")
        if not rows.get(crash_id, "").endswith("damaged"):
            problems.append(f"{literal}: the bad run is not listed as damaged: {rows.get(crash_id)!r}")
        said = listed.stderr.splitlines()
        if len(said) != 1 or path not in said[0] or repr(field.split(".")[-1]) not in said[0]:
            problems.append(f"{literal}: not one line naming the file and field: {listed.stderr!r}")
        as_json = chkpt(["ls", "--json"], env, crashed)
        if as_json.returncode != 0 or {r["id"]: r["status"] for r in json.loads(as_json.stdout)} != {
                fine_id: "finished", crash_id: "damaged"}:
            problems.append(f"{literal}: ls --json: {as_json.stdout[-200:]!r} {as_json.stderr[-200:]!r}")
        shown = chkpt(["show", crash_id], env, crashed)
        if "Traceback" in shown.stderr or shown.returncode not in (1, 0):
            problems.append(f"{literal}: show of the damaged run: {shown.stderr[-300:]!r}")
    assert not problems, "\n".join(problems)
