"""The notebook API: chkpt.runs → checkpoints → variables, chkpt.load and
chkpt.history, against stores made by real runs; plus the text helpers the CLI prints with."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

import chkpt
from chkpt import api, fmt
from conftest import python, write

TRAIN = """
import chkpt
import numpy as np

results = {"train": np.arange(2000.0)}
for epoch in range(3):
    weights = np.full(1000, float(epoch))
    chkpt.snapshot(f"epoch {epoch}")
big = np.arange(300_000.0)  # 2.4 MB: loaded memory-mapped
view = big
del weights
"""


@pytest.fixture
def trained(env, work, monkeypatch):
    """One finished run of train.py: three explicit snapshots, then the exit checkpoint."""
    write(work, "train.py", TRAIN)
    result = python(["train.py"], env, work)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(work)
    return work


def test_runs_checkpoints_variables_with_readable_reprs(trained):
    [run] = chkpt.runs()
    assert [r.id for r in chkpt.runs(script="train.py")] == [run.id]
    assert chkpt.runs(script="other.py") == []
    assert run.status == "finished" and run.script == str(trained / "train.py")
    assert repr(run).startswith(f"<Run {run.id} train.py finished, started {run.started:%Y-%m-%d %H:%M}")
    assert ", 4 checkpoints," in repr(run)
    assert [c.trigger for c in run.checkpoints] == ["explicit"] * 3 + ["exit"]
    assert [c.label for c in run.checkpoints[:3]] == ["epoch 0", "epoch 1", "epoch 2"]
    first = run.checkpoints[0]
    assert repr(first).startswith(f"<Checkpoint {run.id}@1 explicit (epoch 0) at train.py:8, {first.taken:%Y-%m-%d}")
    assert repr(run.checkpoint("exit")).startswith(f"<Checkpoint {run.id}@4 exit, ")  # no "at -"
    exit_checkpoint = run.checkpoint("exit")
    variable = exit_checkpoint.variable("big")
    assert repr(variable) == "<Variable big: numpy.ndarray 300000 float64, 2.3 MiB>"
    assert "view" in exit_checkpoint and "weights" not in exit_checkpoint
    np.testing.assert_array_equal(exit_checkpoint["view"], np.arange(300_000.0))


def test_load_defaults_to_the_latest_run_here_and_its_newest_checkpoint_with_the_name(trained):
    np.testing.assert_array_equal(chkpt.load("big"), np.arange(300_000.0))
    # deleted before exit: found in the newest checkpoint that still had it
    np.testing.assert_array_equal(chkpt.load("weights"), np.full(1000, 2.0))
    np.testing.assert_array_equal(chkpt.load('results["train"]'), np.arange(2000.0))
    np.testing.assert_array_equal(chkpt.load("weights", run="latest@1"), np.zeros(1000))
    np.testing.assert_array_equal(chkpt.load("weights", script="train.py"), np.full(1000, 2.0))
    run = chkpt.runs()[0]
    np.testing.assert_array_equal(chkpt.load("weights", run=run.id[:4] + "@2"), np.ones(1000))
    np.testing.assert_array_equal(chkpt.load("weights", run=run), np.full(1000, 2.0))


def test_load_names_what_is_missing(trained, tmp_path, monkeypatch):
    with pytest.raises(api.NotFound, match=r"never saved 'wieghts'; closest: weights"):
        chkpt.load("wieghts", run="latest")
    with pytest.raises(api.NotFound, match=r"no run of a script in .* saved 'nothing'"):
        chkpt.load("nothing")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(api.NotFound, match=r"pass script= or run= \(latest runs: \w+ train.py\)"):
        chkpt.load("big")
    np.testing.assert_array_equal(chkpt.load("big", script="train.py"), np.arange(300_000.0))


def test_history_gives_every_saved_version_oldest_first(trained):
    versions = chkpt.history("weights")
    assert [c.label for c, _ in versions] == ["epoch 0", "epoch 1", "epoch 2"]
    assert [float(value[0]) for _, value in versions] == [0.0, 1.0, 2.0]
    assert [c.index for c, _ in chkpt.history("big", run="latest")] == [4]
    with pytest.raises(api.NotFound, match="never saved 'nope'"):
        chkpt.history("nope", run="latest")


def test_large_arrays_load_memory_mapped_copy_on_write(trained):
    big = chkpt.load("big")
    assert not big.flags.owndata and big.flags.writeable  # a view of the mapped blob
    big[:] = -1  # changes this copy only, never the store
    np.testing.assert_array_equal(chkpt.load("big"), np.arange(300_000.0))


# -- text helpers ----------------------------------------------------------------------------

def test_human_sizes_durations_and_times():
    assert fmt.human_size(512) == "512 B"
    assert fmt.human_size(1536) == "1.5 KiB"
    assert fmt.human_size(5 * 1024**3) == "5.0 GiB"
    assert fmt.human_duration(0.4) == "0.4s"
    assert fmt.human_duration(75) == "1m15s"
    assert fmt.human_duration(3 * 3600 + 120) == "3h02m"
    assert fmt.human_duration(None) == "-"
    now = time.time()
    assert fmt.relative_time(now - 5, now) == "just now"
    assert fmt.relative_time(now - 600, now) == "10 min ago"
    assert fmt.relative_time(now - 2 * 3600, now) == "2 h ago"
    assert fmt.relative_time(now - 40 * 86400, now) == time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(now - 40 * 86400))


def test_table_aligns_painted_cells_by_their_visible_width():
    paint = fmt.Painter(True)
    text = fmt.table(["NAME", "SIZE"], [[paint("a", "red"), "1 B"], ["long", "10.0 KiB"]],
                     right={1})
    plain = fmt.table(["NAME", "SIZE"], [["a", "1 B"], ["long", "10.0 KiB"]], right={1})
    assert "\x1b[31m" in text
    assert text.replace("\x1b[31m", "").replace("\x1b[0m", "") == plain
    assert plain.splitlines() == ["NAME      SIZE", "a          1 B", "long  10.0 KiB"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert fmt.colour_enabled(Terminal())
    assert not fmt.colour_enabled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not fmt.colour_enabled(Terminal())
    assert fmt.Painter(False)("text", "red") == "text"


def test_progress_draws_on_a_terminal_and_erases_itself():
    stream = Terminal()
    with fmt.Progress("exporting", 2, 2048, stream=stream, delay=0) as progress:
        progress.step("df", 1024)
        deadline = time.monotonic() + 30
        while "exporting df" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        progress.step("arr", 1024)
    drawn = stream.getvalue()
    assert "exporting df (1/2, 0 B of 2.0 KiB)" in drawn
    assert drawn.endswith("\r\x1b[K")
    quiet = io.StringIO()
    with fmt.Progress("exporting", 1, 1, stream=quiet, delay=0) as progress:
        progress.step("df", 1)
    assert quiet.getvalue() == ""


def test_repeat_loads_by_name_see_a_manifest_changed_or_damaged_on_disk(trained):
    run = chkpt.runs()[0]
    ref = run.checkpoint(1).ref
    assert chkpt.load("weights", run=ref)[0] == 0.0 and chkpt.load("weights", run=ref)[0] == 0.0
    [path] = [p for p in (trained.parent / "store").rglob("000001.json") if "checkpoints" in p.parts]
    text = path.read_text()
    path.write_text(text.replace('"label":"epoch 0"', '"label":"renamed"'))
    assert api.checkpoint_at(ref).label == "renamed"  # read again: its bytes changed
    path.write_text(text[:-5])
    with pytest.raises(api.StoreError, match="damaged"):
        chkpt.load("weights", run=ref)
    path.write_text(text)
    assert api.checkpoint_at(ref).label == "epoch 0"
    assert chkpt.load("weights", run=run.id[:4] + "@1")[0] == 0.0  # a prefix, as before
