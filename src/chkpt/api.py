"""Reading the store: runs → checkpoints → variables, references, and loading values.

Used by the CLI and by notebooks (`chkpt.runs`, `chkpt.load`, `chkpt.history`). Listing
reads only the small JSON files; a variable's data is read when it is loaded, large arrays
memory-mapped.

References (SPEC §7): `latest`, `latest:analysis.py`, a run id or id prefix, each optionally
followed by `@N` (checkpoint index), `@crash`, `@exit`, `@signal`, `@first` or `@last`
(the default).

Loading unpickles data: only ever point chkpt at your own store.
"""

from __future__ import annotations

import os

from chkpt import config as config_module
from chkpt import serialize
from chkpt.store import Store, StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class NotFound(LookupError):
    """A run, checkpoint or variable that does not exist; the message names it."""


def default_store() -> Store:
    return Store(config_module.load(os.getcwd()).store_dir)


class Variable:
    """One saved value of a checkpoint (metadata until `.load()`)."""

    def __init__(self, checkpoint: Checkpoint, entry: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        self.entry = entry
        self.name: str = entry["name"]
        self.type: str = entry.get("type", "?")
        self.size: int = int(entry.get("size", 0))
        self.shape: list[int] | None = entry.get("shape")
        self.dtype: str | None = entry.get("dtype")
        self.scope: str = entry.get("scope", "global")

    def load(self) -> Any:
        store = self.checkpoint.run.store
        stream_ref = self.entry["pickle"]
        stream = store.read_blob(stream_ref["hash"], stream_ref.get("size"))
        buffers = [store.read_blob(b["hash"], b.get("size")) for b in self.entry["buffers"]]
        store.touch_run(self.checkpoint.run.id)
        return serialize.loads(stream, buffers)

    def __repr__(self) -> str:
        return f"<Variable {self.name} {self.type} {self.size} B>"


class Checkpoint:
    """One checkpoint's manifest."""

    def __init__(self, run: Run, manifest: dict[str, Any]) -> None:
        self.run = run
        self.manifest = manifest
        self.index: int = int(manifest.get("index", 0))
        self.trigger: str = manifest.get("trigger", "?")
        self.time: float = float(manifest.get("time", 0))
        self.file: str | None = manifest.get("file")
        self.line: int | None = manifest.get("line")
        self.function: str | None = manifest.get("function")
        self.label: str = manifest.get("label", "")
        self.skipped: list[dict[str, str]] = manifest.get("skipped", [])
        self.aliases: dict[str, str] = manifest.get("aliases", {})
        self.variables = [Variable(self, v) for v in manifest.get("variables", [])]

    def variable(self, name: str) -> Variable:
        name = self.aliases.get(name, name)
        for variable in self.variables:
            if variable.name == name:
                return variable
        raise NotFound(f"no variable {name!r} in {self.run.id}@{self.index}"
                       f"{_closest(name, [v.name for v in self.variables])}")

    def load(self, name: str) -> Any:
        return self.variable(name).load()

    def __repr__(self) -> str:
        return f"<Checkpoint {self.run.id}@{self.index} {self.trigger} line {self.line}>"


class Run:
    """One run of a script: its metadata, and its checkpoints on demand."""

    def __init__(self, store: Store, meta: dict[str, Any]) -> None:
        self.store = store
        self.meta = meta
        self.id: str = meta["id"]
        self.script: str = meta.get("script") or "?"
        self.status: str = meta.get("status", "?")
        self.started: float = float(meta.get("started") or 0)
        self.ended: float | None = meta.get("ended")
        self._checkpoints: list[Checkpoint] | None = None
        self.problems: list[str] = []

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Readable checkpoints, oldest first; unreadable ones are listed in `problems`."""
        if self._checkpoints is None:
            loaded = []
            for index in self.store.checkpoint_indexes(self.id):
                try:
                    loaded.append(Checkpoint(self, self.store.read_checkpoint(self.id, index)))
                except (StoreError, FileNotFoundError) as exc:
                    self.problems.append(str(exc))
            self._checkpoints = loaded
        return self._checkpoints

    @property
    def size(self) -> int:
        """Bytes of the distinct blobs this run refers to."""
        from chkpt.gc import checkpoint_blobs

        blobs: dict[str, int] = {}
        for checkpoint in self.checkpoints:
            blobs.update(checkpoint_blobs(checkpoint.manifest))
        return sum(blobs.values())

    def checkpoint(self, selector: str | int | None = None) -> Checkpoint:
        """By index, or "crash", "exit", "signal", "first", "last" (default)."""
        checkpoints = self.checkpoints
        if not checkpoints:
            raise NotFound(f"run {self.id} has no readable checkpoint")
        if selector in (None, "", "last", "latest"):
            return checkpoints[-1]
        if selector == "first":
            return checkpoints[0]
        if isinstance(selector, int) or str(selector).lstrip("-").isdigit():
            wanted = int(selector)
            if wanted < 0 and -wanted <= len(checkpoints):
                return checkpoints[wanted]
            for checkpoint in checkpoints:
                if checkpoint.index == wanted:
                    return checkpoint
            indexes = ", ".join(str(c.index) for c in checkpoints)
            raise NotFound(f"run {self.id} has no checkpoint {wanted} (it has {indexes})")
        for checkpoint in reversed(checkpoints):
            if checkpoint.trigger == selector:
                return checkpoint
        triggers = ", ".join(sorted({c.trigger for c in checkpoints}))
        raise NotFound(f"run {self.id} has no {selector} checkpoint (it has: {triggers})")

    def __repr__(self) -> str:
        return f"<Run {self.id} {os.path.basename(self.script)} {self.status}>"


def _closest(name: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=3)
    return f"; closest: {', '.join(close)}" if close else ""


def all_runs(store: Store, problems: list[str] | None = None) -> list[Run]:
    """Every readable run, newest first."""
    runs = []
    for run_id in store.run_ids():
        try:
            runs.append(Run(store, store.read_run(run_id)))
        except FileNotFoundError:
            continue  # being created, or debris gc will remove
        except StoreError as exc:
            if problems is not None:
                problems.append(str(exc))
    runs.sort(key=lambda r: r.started, reverse=True)
    return runs


def _matches_script(run: Run, script: str) -> bool:
    return run.script == os.path.abspath(script) or os.path.basename(run.script) == script


def runs(script: str | None = None, store: Store | None = None) -> list[Run]:
    """Runs, newest first; `script` (a file name or path) keeps one script's runs."""
    found = all_runs(store or default_store())
    return [r for r in found if script is None or _matches_script(r, script)]


def resolve(ref: str | None, store: Store | None = None,
            script: str | None = None) -> tuple[Run, str | None]:
    """The run a reference names, and its checkpoint selector (after "@")."""
    store = store or default_store()
    ref = ref or "latest"
    run_part, _, selector = ref.partition("@")
    found = runs(script, store)
    if run_part.startswith("latest"):
        wanted_script = run_part.partition(":")[2]
        if wanted_script:
            found = [r for r in found if _matches_script(r, wanted_script)]
        if not found:
            what = f"script {wanted_script or script}" if (wanted_script or script) else "any"
            raise NotFound(f"no run of {what} in {store.root}")
        return found[0], selector or None
    matching = [r for r in found if r.id.startswith(run_part)]
    if len(matching) == 1:
        return matching[0], selector or None
    if not matching:
        raise NotFound(f"no run {run_part!r} in {store.root}"
                       f"{_closest(run_part, [r.id for r in found])}")
    ids = ", ".join(r.id for r in matching[:5])
    raise NotFound(f"run prefix {run_part!r} is ambiguous ({ids})")


def _runs_here(store: Store) -> list[Run]:
    cwd = os.getcwd()
    return [r for r in runs(None, store)
            if os.path.dirname(r.script) == cwd or r.meta.get("cwd") == cwd]


def load(name: str, run: str | None = None, script: str | None = None,
         store: Store | None = None) -> Any:
    """Variable `name` from a run's checkpoint (default: the latest run here that has it)."""
    store = store or default_store()
    if run is not None or script is not None:
        found, selector = resolve(run, store, script)
        return found.checkpoint(selector).load(name)
    for candidate in _runs_here(store):
        try:
            return candidate.checkpoint().load(name)
        except NotFound:
            continue
    raise NotFound(f"no run of a script in {os.getcwd()} saved {name!r}")


def history(name: str, run: str | None = None, script: str | None = None,
            store: Store | None = None) -> list[tuple[Checkpoint, Any]]:
    """Every saved version of `name` in one run, oldest first."""
    store = store or default_store()
    found, _ = resolve(run, store, script)
    versions = []
    for checkpoint in found.checkpoints:
        try:
            versions.append((checkpoint, checkpoint.load(name)))
        except NotFound:
            continue
    if not versions:
        raise NotFound(f"run {found.id} never saved {name!r}")
    return versions
