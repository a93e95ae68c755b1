"""Finding, comparing, keeping and cleaning runs: `--version`, `ls` columns and filters, `rm`,
`pin`/`unpin`, `diff`, history across runs, export past failures, JSON of `show NAME`, config
warnings once, the plain shell, `python -m chkpt --help`, notebook objects, Ctrl-C, ambiguous
script names and the summaries in run records; against stores made by real runs (this venv's
python, autoload installed), through the real console script where the process matters and
`cli.main` in this process otherwise."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import signal

import numpy as np
import pytest

import chkpt
from chkpt import api, records
from chkpt.store import Store, layout
from conftest import CHKPT, python, run, write

TRAIN = """
import sys
import numpy as np
import chkpt

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
weights = np.zeros(1000)
for epoch in range(3):
    weights = weights + scale * (epoch + 1)
    weights[:500] = 0.0
    loss = 10.0 / (epoch + 1) / scale
    if epoch == 2:
        extra = np.ones(2000)
        del scale
    chkpt.snapshot(f"epoch {epoch}")
"""

THINGS = """
import numpy as np

class Thing:
    def __init__(self):
        self.data = np.zeros(2000)

thing = Thing()
out = [np.zeros(3) + i for i in range(12)]
x = np.arange(5000.0)
raise KeyboardInterrupt
"""




def train(env, directory, *args: str, name: str = "train.py") -> str:
    """Run train.py in `directory` with `args`; returns the new run's id."""
    write(directory, name, TRAIN)
    before = set(Store(env["CHKPT_DIR"]).run_ids())
    result = python([name, *args], env, directory)
    assert result.returncode == 0, result.stderr
    [run_id] = set(Store(env["CHKPT_DIR"]).run_ids()) - before
    return run_id


@pytest.fixture
def things(env, work):
    """One run of a script interrupted by Ctrl-C (KeyboardInterrupt), with a script-defined class."""
    write(work, "things.py", THINGS)
    result = python(["things.py"], env, work)
    assert result.returncode == -signal.SIGINT and "KeyboardInterrupt" in result.stderr
    return work


# -- small correctness items ------------------------------------------------------------------

def test_version_and_the_runners_help_under_python_m(env, work):
    version = run([CHKPT, "--version"], env, work)
    assert (version.returncode, version.stdout.strip()) == (0, f"chkpt {chkpt.__version__}")
    helped = python(["-m", "chkpt", "--help"], env, work)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: chkpt run [OPTIONS] script.py")
    assert "--interval" in helped.stdout
    assert "inspect" not in run([CHKPT, "run", "--help"], env, work).stdout.lower().split("\n")[0]


def test_ctrl_c_is_interrupted_and_variables_sort_naturally_and_group(env, things, in_process):
    [listed] = json.loads(in_process(["ls", "--json"], things).stdout)
    assert listed["status"] == "interrupted" and listed["exception"] == "KeyboardInterrupt"
    shown = in_process(["ls"], things).stdout
    assert "interrupted (Ctrl-C) at things.py:11" in shown and "crashed" not in shown
    checkpoint = chkpt.runs()[0].checkpoint("crash")
    names = [v.name for v in checkpoint.variables]
    assert names.index("out[2]") < names.index("out[10]") < names.index("thing")
    table = in_process(["show", "latest"], things).stdout
    assert "out[0…11] 12 numpy.ndarray 3 float64 1.7 KiB" in " ".join(table.split()) and "out[5]" not in table


def test_export_goes_on_past_a_value_it_cannot_write_and_leaves_no_empty_file(env, things):
    result = run([CHKPT, "export", "latest", "--to", "out"], env, things)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("chkpt: ")]
    assert problems[0].startswith("chkpt: cannot export thing (__main__.Thing) (its class is defined in the script)")
    assert problems[1] == "chkpt: 1 of 16 values could not be exported; the others were"
    assert "Traceback" not in result.stderr
    files = sorted(os.listdir(things / "out"))
    assert "thing.pkl" not in files and "x.npy" in files and "thing.data.npy" in files
    assert all(os.path.getsize(things / "out" / name) > 0 for name in files)


def test_frames_of_polars_and_tables_of_pyarrow_export_as_parquet(tmp_path):
    from chkpt.cli.export import export_value

    pytest.importorskip("pyarrow")
    import pyarrow
    import pyarrow.parquet

    table = pyarrow.table({"a": [1, 2, 3]})
    assert export_value(table, "t", str(tmp_path)) == [str(tmp_path / "t.parquet")]
    assert pyarrow.parquet.read_table(tmp_path / "t.parquet").equals(table)
    if importlib.util.find_spec("polars") is not None:
        import polars

        frame = polars.DataFrame({"a": [1.0, 2.0]})
        assert export_value(frame, "p", str(tmp_path)) == [str(tmp_path / "p.parquet")]
        assert polars.read_parquet(tmp_path / "p.parquet").equals(frame)


def test_show_of_names_prints_json_with_json(env, things, in_process):
    shown = json.loads(in_process(["show", "latest", "x", "out[3]", "--json"], things).stdout)
    assert shown["checkpoint"].endswith("@1")
    assert [v["name"] for v in shown["values"]] == ["x", "out[3]"]
    assert shown["values"][0]["shape"] == [5000] and "4.999e+03" in shown["values"][0]["preview"]


def test_config_warnings_are_printed_once_and_only_by_commands_that_use_settings(env, work):
    config_dir = os.path.join(env["XDG_CONFIG_HOME"], "chkpt")
    os.makedirs(config_dir)
    with open(os.path.join(config_dir, "config.toml"), "w") as handle:
        handle.write('interval = "bogus"\n')

    def warnings(*args: str, console_script: bool = False) -> list[str]:
        # the console script lives in the venv: autoload reads the config but must not watch it
        result = run([CHKPT, *args], env, work) if console_script else python(["-m", "chkpt", *args], env, work)
        return [line for line in result.stderr.splitlines() if "interval" in line]

    for console_script in (False, True):
        assert len(warnings("config", console_script=console_script)) == 1
        assert len(warnings("gc", "--dry-run", console_script=console_script)) == 1
        assert warnings("ls", console_script=console_script) == []


def test_the_plain_shell_chains_no_import_error_to_what_is_typed(env, things, tmp_path):
    # the plain shell is the fallback where IPython is not installed (the test venv has it for
    # the notebook tests): an IPython that cannot be imported stands for its absence
    hidden = tmp_path / "no-ipython" / "IPython"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('IPython is not installed here')\n")
    result = run([CHKPT, "shell", "latest"], dict(env, PYTHONPATH=str(hidden.parent)), things,
                 stdin="1/0\nprint(x.shape)\n")
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "IPython" not in result.stderr and "During handling" not in result.stderr
    assert "(5000,)" in result.stdout


# -- notebook objects -------------------------------------------------------------------------

def test_notebook_objects_have_dates_and_html_tables(env, work, monkeypatch):
    run_id = train(env, work)
    monkeypatch.chdir(work)
    [found] = chkpt.runs()
    assert isinstance(found.started, datetime.datetime) and isinstance(found.ended, datetime.datetime)
    assert f"started {found.started:%Y-%m-%d %H:%M:%S}" in repr(found)
    assert repr(found.checkpoint("exit")).startswith(f"<Checkpoint {run_id}@4 exit, {found.started:%Y-%m-%d}")
    assert found.started <= found.checkpoints[0].taken <= found.checkpoints[-1].taken <= found.ended
    assert "<table>" in chkpt.runs()._repr_html_() and run_id in chkpt.runs()._repr_html_()
    assert "<td style='text-align:left'>weights</td>" in found.checkpoint(1)._repr_html_()
    assert "epoch 0" in found._repr_html_()
    assert "<caption" in found.checkpoint(1).variable("weights")._repr_html_()


# -- ambiguous script names ---------------------------------------------------------------------

def test_a_name_of_scripts_in_several_folders_is_ambiguous_unless_one_is_here(env, tmp_path, monkeypatch, capsys):
    a_id = train(env, tmp_path / "proj-a")
    train(env, tmp_path / "proj-b")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(api.NotFound) as error:
        chkpt.load("weights", script="train.py")
    assert "proj-a/train.py" in str(error.value) and "proj-b/train.py" in str(error.value)
    assert "give its path" in str(error.value)
    shown = run([CHKPT, "show", "train.py"], env, tmp_path)
    assert shown.returncode == 2 and "proj-a" in shown.stderr and "proj-b" in shown.stderr
    monkeypatch.chdir(tmp_path / "proj-a")
    capsys.readouterr()
    assert chkpt.runs()[0].id != a_id  # the newest run is proj-b's
    np.testing.assert_array_equal(chkpt.load("weights", script="train.py")[500:], np.full(500, 6.0))
    assert f"taking the one here, {tmp_path / 'proj-a' / 'train.py'}" in capsys.readouterr().err
    assert api.resolve("latest:train.py")[0].id == a_id
    assert api.resolve(None, script=str(tmp_path / "proj-b" / "train.py"))[0].id != a_id


# -- ls ---------------------------------------------------------------------------------------

def test_ls_shows_folders_where_names_repeat_and_arguments_and_filters(env, tmp_path, in_process):
    first = train(env, tmp_path / "proj-a", "2")
    second = train(env, tmp_path / "proj-b", "3")
    write(tmp_path / "proj-b", "bad.py", "import numpy as np\nx = np.ones(5000)\n1/0\n")
    assert python(["bad.py"], env, tmp_path / "proj-b").returncode == 1
    table = in_process(["ls"], tmp_path).stdout.splitlines()
    assert table[0].split() == ["RUN", "SCRIPT", "FOLDER", "ARGS", "STARTED", "DURATION", "CKPTS", "SIZE", "STORED",
                                "STATUS"]
    assert any(first in line and "proj-a" in line and " 2 " in line for line in table)
    assert any(second in line and "proj-b" in line and " 3 " in line for line in table)
    assert table[-1].startswith("3 runs, ")

    crashed = in_process(["ls", "--status", "crashed"], tmp_path).stdout.splitlines()
    assert len(crashed) == 3 and "bad.py" in crashed[1]
    assert crashed[-1].startswith("1 run (matching --status crashed; 3 in all), ")
    assert "FOLDER" not in crashed[0] and "ARGS" not in crashed[0]  # bad.py's name does not repeat
    in_b = json.loads(in_process(["ls", "--script", str(tmp_path / "proj-b"), "--json"], tmp_path).stdout)
    assert sorted(r["script"] for r in in_b) == [str(tmp_path / "proj-b" / n) for n in ("bad.py", "train.py")]
    assert len(json.loads(in_process(["ls", "--since", "1h", "--json"], tmp_path).stdout)) == 3
    assert json.loads(in_process(["ls", "--until", "1h", "--json"], tmp_path).stdout) == []
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    assert json.loads(in_process(["ls", "--since", tomorrow, "--json"], tmp_path).stdout) == []
    limited = in_process(["ls", "-n", "1", "--script", "train.py"], tmp_path).stdout.splitlines()
    assert limited[-1].startswith("1 run (of 2 matching; --script train.py; 3 in all), ")
    bad = in_process(["ls", "--status", "crashd"], tmp_path)
    assert bad.returncode == 2 and "unknown status crashd" in bad.stderr
    assert in_process(["ls", "--since", "yesterdayish"], tmp_path).returncode == 2


def test_times_are_read_as_times_ago_dates_or_dates_with_times():
    now = 1_000_000_000.0
    assert api.parse_when("90s", now) == now - 90
    assert api.parse_when("2d", now) == now - 2 * 86400
    assert api.parse_when("2025-06-03", now) == datetime.datetime(2025, 6, 3).timestamp()
    assert api.parse_when("2025-06-03 14:05", now) == datetime.datetime(2025, 6, 3, 14, 5).timestamp()
    with pytest.raises(ValueError, match="a time ago like 1h"):
        api.parse_when("soon", now)


# -- rm, pin, unpin -----------------------------------------------------------------------------

def test_rm_pin_and_unpin_and_gc_keeping_pinned_runs(env, work, in_process):
    kept = train(env, work, "2")
    dropped = train(env, work, "3")
    other = train(env, work, "4")
    assert in_process(["pin", kept], work).stdout.startswith(f"pinned run {kept} train.py")
    listed = {r["id"]: r for r in json.loads(in_process(["ls", "--json"], work).stdout)}
    assert listed[kept]["pinned"] and not listed[dropped]["pinned"]
    table = in_process(["ls"], work).stdout
    assert "PIN" in table.splitlines()[0] and "pinned" in next(line for line in table.splitlines() if kept in line)
    assert ", 1 pinned," in table.splitlines()[-1]

    dry = in_process(["rm", dropped, "--dry-run"], work)
    assert dry.stdout.startswith(f"would remove run {dropped} train.py (frees ")
    assert dropped in Store(env["CHKPT_DIR"]).run_ids()
    assert in_process(["rm", dropped], work).stdout.startswith(f"removed run {dropped} train.py")
    assert dropped not in Store(env["CHKPT_DIR"]).run_ids()
    refused = in_process(["rm", kept], work)
    assert refused.returncode == 2 and "is pinned; chkpt unpin" in refused.stderr
    assert in_process(["rm", f"{other}@2"], work).returncode == 2

    gc = in_process(["gc", "--older-than", "0s", "--dry-run"], work).stdout
    assert f"would remove run {other}" in gc and f"would keep pinned run {kept} train.py" in gc
    assert json.loads(in_process(["gc", "--older-than", "0s", "--json"], work).stdout)["kept_by_pins"] == [kept]
    assert Store(env["CHKPT_DIR"]).run_ids() == [kept]
    assert in_process(["unpin", kept], work).stdout.startswith(f"unpinned run {kept}")
    assert in_process(["gc", "--older-than", "0s"], work).returncode == 0
    assert Store(env["CHKPT_DIR"]).run_ids() == []


# -- diff and history ---------------------------------------------------------------------------

def test_diff_names_added_removed_and_changed_variables_with_a_summary(env, work, in_process, monkeypatch):
    run_id = train(env, work)
    shown = in_process(["diff", f"{run_id}@2", f"{run_id}@3"], work).stdout.splitlines()
    assert shown[0].startswith(f"{run_id}@2 (explicit (epoch 1) at train.py:15) → {run_id}@3")
    rows = {line.split()[1]: line for line in shown[2:-1]}
    assert rows["extra"].startswith("+") and rows["scale"].startswith("-")
    assert "max |Δ| 3, 50% changed" in rows["weights"] and rows["loss"].endswith("5 → 3.33333")
    assert shown[-1] == "1 added, 1 removed, 3 changed, 0 unchanged"
    against_previous = in_process(["diff", f"{run_id}@3"], work).stdout
    assert against_previous == in_process(["diff", f"{run_id}@2", f"{run_id}@3"], work).stdout

    monkeypatch.chdir(work)
    found = chkpt.diff(f"{run_id}@4")  # the exit checkpoint keeps the same data, not small values
    assert [(c.name, c.kind) for c in found.changes] == [("epoch", "removed"), ("loss", "removed")]
    assert found.unchanged == ["extra", "weights"] and found.before.index == 3
    changes = json.loads(in_process(["diff", f"{run_id}@1", f"{run_id}@2", "--json"], work).stdout)["changes"]
    assert [c["name"] for c in changes] == ["epoch", "loss", "weights"] and changes[1]["values"] == [10.0, 5.0]
    assert changes[2] == {
        "name": "weights", "change": "changed", "type": "numpy.ndarray", "shape": [1000], "dtype": "float64",
        "before": {"type": "numpy.ndarray", "shape": [1000], "dtype": "float64", "size": found.after.variable(
            "weights").size}, "after": {"type": "numpy.ndarray", "shape": [1000], "dtype": "float64",
                                        "size": found.after.variable("weights").size},
        "max_abs_difference": 2.0, "fraction_changed": 0.5, "values": None, "summary": "max |Δ| 2, 50% changed"}
    assert in_process(["diff", f"{run_id}@1"], work).returncode == 2  # nothing before the first


def test_history_within_a_run_and_across_the_runs_of_a_script(env, work, monkeypatch):
    first = train(env, work, "1")
    second = train(env, work, "2")
    monkeypatch.chdir(work)
    within = chkpt.history("loss")
    assert [c.run.id for c, _ in within] == [second] * 3 and [v for _, v in within] == [5.0, 2.5, 5 / 3]
    text = repr(within)
    assert text.startswith("<History of loss: 3 versions in 1 run █▂▁ 5 → 1.667>")
    across = chkpt.history("loss", script="train.py", across_runs=True)
    assert [(c.run.id, c.label, v) for c, v in across] == [(first, "epoch 2", 10 / 3), (second, "epoch 2", 5 / 3)]
    assert "2 versions in 2 runs" in repr(across) and "<table>" in across._repr_html_()
    assert chkpt.history("weights").numbers is None


# -- honest records and summaries ----------------------------------------------------------------

def test_a_killed_run_records_a_heartbeat_and_says_it_ran_at_least_that_long(env, work, in_process):
    write(work, "killed.py", """
        import os, signal, time
        import numpy as np
        import chkpt
        data = np.ones(5000)
        chkpt.snapshot("before")
        time.sleep(0.3)
        chkpt.snapshot("later")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert python(["killed.py"], env, work).returncode == -signal.SIGKILL
    [listed] = json.loads(in_process(["ls", "--json"], work).stdout)
    assert listed["status"] == "killed" and listed["duration"] >= 0.3
    assert listed["heartbeat"] >= listed["started"] + 0.3
    assert "≥" in in_process(["ls"], work).stdout.splitlines()[1]


def test_listing_from_summaries_matches_listing_from_manifests(env, work, in_process):
    run_id = train(env, work)
    store = Store(env["CHKPT_DIR"])
    meta = store.read_run(run_id)
    assert meta["summary"]["indexes"] == store.checkpoint_indexes(run_id) == [1, 2, 3, 4]
    from_summary = in_process(["ls", "--json"], work).stdout
    path = store.path(layout.run_record(run_id))
    with open(path) as handle:
        record = json.load(handle)
    del record["summary"]
    with open(path, "w") as handle:
        json.dump(record, handle)
    assert in_process(["ls", "--json"], work).stdout == from_summary
    assert in_process(["gc", "--dry-run", "--json"], work).stdout  # and gc reads the manifests instead


def test_a_summary_is_used_only_while_it_describes_the_checkpoint_files():
    summary = records.summarize([{"index": 1, "trigger": "crash", "time": 5.0, "line": 3, "file": "/a.py",
                                  "function": "f", "label": "", "variables": []}])
    record = {"summary": summary, "heartbeat": 10.0}
    assert summary["crash"] == {"index": 1, "file": "/a.py", "line": 3, "function": "f"}
    assert records.current_summary(record, {1: 9.0}) is summary
    assert records.current_summary(record, {1: 11.0}) is None  # the manifest was written after it
    assert records.current_summary(record, {1: 9.0, 2: 9.5}) is None  # a commit it does not know of
    assert records.current_summary({"summary": summary}, {1: 9.0}) is None
    damaged = {"id": "x", "script": "/a.py", "argv": [], "started": 1, "status": "finished",
               "summary": {"indexes": [1], "blobs": []}}
    with pytest.raises(ValueError, match="field 'summary' field 'blobs' should be an object of blob sizes"):
        records.decode_run(json.dumps(damaged).encode())


def test_a_summary_that_no_longer_matches_the_checkpoint_files_is_not_used(env, work, in_process):
    run_id = train(env, work)
    store = Store(env["CHKPT_DIR"])
    directory = store.path(layout.checkpoints(run_id))
    with open(os.path.join(directory, "000004.json")) as handle:
        last = json.load(handle)
    with open(os.path.join(directory, "000005.json"), "w") as handle:  # a commit its summary missed
        json.dump(dict(last, index=5), handle)
    [listed] = json.loads(in_process(["ls", "--json"], work).stdout)
    assert listed["checkpoints"] == 5 and listed["status"] == "finished"
    with open(os.path.join(directory, "000002.json"), "w") as handle:  # damaged after its summary
        handle.write("{not json")
    [listed] = json.loads(in_process(["ls", "--json"], work).stdout)
    assert listed["status"] == "damaged" and listed["checkpoints"] == 4
