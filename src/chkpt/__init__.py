"""chkpt: makes every Python script run recoverable.

Installed, it saves the numpy arrays, DataFrames and other large data of every script
run in the environment to a global store. This module is the public API; it imports
nothing heavy so that `import chkpt` inside a user's script costs next to nothing.

Inside a running script: `snapshot`, `track`, `paused` (no-ops when chkpt is not active).
In a notebook or REPL: `runs`, `load`, `history`, `diff`, `restore`, `checkout`; loaded into an
IPython kernel or shell (automatically, or by `%load_ext chkpt`) it checkpoints the namespace
between cells and adds the `%chkpt` magic.
"""

TYPE_CHECKING = False  # typing costs milliseconds; every traced script imports this package
# (and no `from __future__ import annotations` either: __future__ would be one more module)
if TYPE_CHECKING:
    from typing import Any

    from chkpt.api import Checkpoint, History, Run
    from chkpt.compare import Diff
    from chkpt.notebook.restore import Restored

__version__ = "0.1.0"
__all__ = ["checkout", "diff", "history", "load", "paused", "restore", "runs", "snapshot", "track"]


def snapshot(label: str = "") -> None:
    """Take a checkpoint now, labelled `label` (does nothing when chkpt is not active)."""
    from chkpt import watch

    active = watch.active()
    if active is not None:
        active.explicit_snapshot(label)


def track(obj: "Any", name: str) -> "Any":
    """Save `obj` under `name` in every checkpoint from now on, whatever its type or size."""
    from chkpt import watch

    active = watch.active()
    if active is not None:
        active.track(obj, name)
    return obj


class paused:
    """No periodic checkpoint is taken while the block runs (exit and crash ones still are)."""

    def __enter__(self) -> None:
        from chkpt import watch

        self._session = watch.active()
        if self._session is not None:
            self._session.pause()

    def __exit__(self, *exc_info: object) -> None:
        if self._session is not None:
            self._session.resume()


def runs(script: str | None = None, *, status: "str | list[str] | None" = None,
         since: "str | float | None" = None, until: "str | float | None" = None) -> "list[Run]":
    """Runs in the store, newest first; `script` keeps those of one script (name, path or
    folder), `status` those that ended so ("crashed", or a list), `since`/`until` those started
    in that window (Unix times, or "1h", "2d", "2025-06-03").

    A run has `.checkpoints` (each with `.variables`, `.load(name)`, `[name]`), and
    `.checkpoint("crash")` / `.checkpoint(3)` picks one.
    """
    from chkpt import api

    return api.runs(script, status=status, since=since, until=until)


def load(name: str, run: "str | Run | None" = None, script: str | None = None) -> "Any":
    """Load variable `name` as last saved.

    By default from the latest run of a script in the current directory that saved it;
    `script="train.py"` picks that script's latest run, `run` a run or checkpoint by
    reference ("latest", "3fa2", "latest:train.py@crash") or a `Run` from `runs()`.
    Names as `chkpt show` lists them: "df", "model.weights", "results['train']".
    """
    from chkpt import api

    return api.load(name, run=run, script=script)


def history(name: str, run: "str | Run | None" = None, script: str | None = None, *,
            across_runs: bool = False) -> "History":
    """Every saved version of variable `name` in one run, oldest first, as (checkpoint,
    value) pairs; the run is chosen as for `load`. `across_runs=True`: the last version of
    each run of that script instead, oldest run first. Numbers show as a sparkline."""
    from chkpt import api

    return api.history(name, run=run, script=script, across_runs=across_runs)


def diff(before: "str | Checkpoint", after: "str | Checkpoint | None" = None) -> "Diff":
    """What changed between two checkpoints ("latest@crash", "3fa2@2" or `Checkpoint`s):
    variables added, removed and changed (by content, so unchanged data is not loaded), with
    shape/dtype changes and, for numbers, the largest difference and the fraction changed.
    Without `after`: from the checkpoint before `before` in its run."""
    from chkpt import compare

    return compare.diff(before, after)


def restore(ref: str | None = None, *, namespace: "dict[str, Any] | None" = None) -> "Restored":
    """Put a notebook's saved state back: by default the last checkpoint of this notebook's
    previous kernel (the one that died), else the checkpoint `ref` names ("3fa2", "3fa2@5").

    Into `namespace`: by default the IPython shell's user namespace, else the caller's globals.
    Modules, functions and classes are made again first (imported again, or their `def`/`class`
    statement run again from the cell that defined them), then the values are loaded (read in
    parallel). Returns what was restored, and what was not with the cell that defined it.
    """
    from chkpt.notebook import commands

    return commands.restore(ref, namespace, depth=2)


def checkout(cell: int, run: str | None = None, *, namespace: "dict[str, Any] | None" = None) -> "Restored":
    """Replace the namespace's state with the one after cell [`cell`] (its execution count): of
    this kernel, else of the kernel it restored from; `run` names another run. Names of data
    made after that cell are removed; the state being replaced is checkpointed first."""
    from chkpt.notebook import commands

    return commands.checkout(cell, run, namespace, depth=2)


def load_ipython_extension(ipython: "Any") -> None:
    """`%load_ext chkpt`: checkpoint this shell's namespace between cells, and add `%chkpt`."""
    from chkpt.notebook import kernel

    ipython.register_magic_function(_chkpt_magic, magic_kind="line", magic_name="chkpt")
    kernel.load(ipython)


def _chkpt_magic(line: str) -> None:
    """%chkpt restore [RUN[@N]]: put back the last checkpoint of this notebook's previous kernel
    (after it died, say), or the checkpoint named. %chkpt checkout CELL [--run RUN]: the state after
    cell [CELL]. %chkpt status: whether this kernel is checkpointed. See docs/notebooks.md."""
    from chkpt.notebook import commands  # the read side, loaded when first used

    commands.magic(line)


def unload_ipython_extension(ipython: "Any") -> None:
    """`%unload_ext chkpt`: save the last changes and stop checkpointing."""
    from chkpt.notebook import kernel

    kernel.unload(ipython)
