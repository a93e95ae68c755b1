"""The read model: runs → checkpoints → variables, references to them, and loading values.

Used by the CLI, resume and notebooks (`chkpt.runs`, `chkpt.load`, `chkpt.history`). Listing
reads only the small records; a variable's data is read when it is loaded, large arrays
memory-mapped (copy-on-write: changing the loaded array never changes the store). A run whose
record cannot be read is listed with status "damaged"; an unreadable checkpoint is left out
and described in its run's `problems`.

References: `latest`, `latest:analysis.py`, a run id or id prefix, or a script name (its
latest run), each optionally followed by `@N` (checkpoint index; negative counts from the
end), `@crash`, `@exit`, `@signal`, `@periodic`, `@explicit`, `@first` or `@last` (the
default). Variable names follow naming.py.
"""

from __future__ import annotations

import os
import time

from chkpt import config as config_module
from chkpt import naming, records, serialize
from chkpt.store import Store, StoreError, is_script

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TRIGGER_SELECTORS = ("crash", "exit", "signal", "periodic", "explicit")


class NotFound(LookupError):
    """A run, checkpoint or variable that does not exist; the message names it."""


class LoadError(Exception):
    """A saved value that cannot be turned back into an object; the message says which and why."""


def default_store() -> Store:
    return Store(config_module.load(os.getcwd()).store_dir)


def shape_text(shape: list[int] | None) -> str:
    """[1000, 10] → "1000x10"."""
    return "x".join(map(str, shape)) if shape else ""


class Variable:
    """One saved value of a checkpoint (metadata until `.load()`)."""

    def __init__(self, checkpoint: Checkpoint, entry: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        self.entry = entry
        self.name: str = entry["name"]
        self.type: str = entry["type"]
        self.size: int = entry["size"]
        self.shape: list[int] | None = entry.get("shape")
        self.dtype: str | None = entry.get("dtype")
        self.scope: str = entry["scope"]

    def load(self, parts: dict[str, Any] | None = None) -> Any:
        """The value; buffers of 1 MiB or more are memory-mapped, not read.

        A container saved with its parts on their own (`results`, `model`) loads them too;
        `parts` keeps a part reachable by two paths one object.
        """
        store = self.checkpoint.run.store
        stream_ref = self.entry["pickle"]
        stream = store.read_blob(stream_ref["hash"], stream_ref["size"])
        buffers = [store.read_blob(b["hash"], b["size"]) for b in self.entry["buffers"]]
        store.touch_run(self.checkpoint.run.id)
        parts = {} if parts is None else parts

        def resolve(name: str) -> Any:  # NotFound makes the part a placeholder with the reason
            if name not in parts:
                reasons = [s["reason"] for s in self.checkpoint.skipped if s["name"] == name]
                if reasons:
                    raise NotFound(reasons[0])
                parts[name] = self.checkpoint.variable(name).load(parts)
            return parts[name]

        try:
            return serialize.loads(stream, buffers, resolve)
        except Exception as exc:
            hint = ""
            if "__main__" in str(exc):
                hint = " (its class is defined in the script, which is not imported here)"
            raise LoadError(f"cannot load {self.name} from {self.checkpoint.ref}: "
                            f"{type(exc).__name__}: {exc}{hint}") from None

    def __repr__(self) -> str:
        from chkpt.fmt import human_size

        details = " ".join(filter(None, [self.type, shape_text(self.shape), self.dtype or ""]))
        return f"<Variable {self.name}: {details}, {human_size(self.size)}>"


class Checkpoint:
    """One checkpoint's manifest: when and where it was taken, what it saved and skipped."""

    def __init__(self, run: Run, manifest: dict[str, Any]) -> None:
        self.run = run
        self.manifest = manifest
        self.index: int = manifest["index"]
        self.trigger: str = manifest["trigger"]
        self.time: float = manifest["time"]
        self.file: str | None = manifest.get("file")
        self.line: int | None = manifest.get("line")
        self.function: str | None = manifest.get("function")
        self.label: str = manifest["label"]
        self.exception: str | None = manifest.get("exception")
        self.skipped: list[dict[str, str]] = manifest["skipped"]
        self.aliases: dict[str, str] = manifest["aliases"]
        self.variables = [Variable(self, v) for v in manifest["variables"]]

    @property
    def ref(self) -> str:
        """A reference that names this checkpoint: `RUN@N`."""
        return f"{self.run.id}@{self.index}"

    @property
    def where(self) -> str:
        """"analysis.py:42", with " in f()" inside a function."""
        if not self.line:
            return "-"
        inside = f" in {self.function}()" if self.function and self.function != "<module>" else ""
        return f"{os.path.basename(self.file or self.run.script)}:{self.line}{inside}"

    @property
    def size(self) -> int:
        """Bytes of the values saved (shared or unchanged data counted in full)."""
        return sum(v.size for v in self.variables)

    @property
    def names(self) -> list[str]:
        """Every name a value can be loaded by: saved names, then aliases."""
        return [v.name for v in self.variables] + list(self.aliases)

    def variable(self, name: str) -> Variable:
        name = naming.canonical(name)
        name = self.aliases.get(name, name)
        for variable in self.variables:
            if variable.name == name:
                return variable
        hint = _closest(name, self.names) or f"; it has: {', '.join(self.names[:10]) or 'nothing'}"
        raise NotFound(f"no variable {name!r} in {self.ref}{hint}")

    def load(self, name: str) -> Any:
        """A saved value, or a value inside one (`results['train']['x']`, `model.weights`)."""
        try:
            return self.variable(name).load()
        except NotFound:
            for prefix, steps in naming.prefixes(name):
                if prefix in self:
                    return naming.follow(self.variable(prefix).load(), steps)
            raise

    def __getitem__(self, name: str) -> Any:
        return self.load(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and naming.canonical(name) in self.names

    def __repr__(self) -> str:
        return (f"<Checkpoint {self.ref} {self.trigger} at {self.where}, "
                f"{len(self.variables)} variables>")


class Run:
    """One run of a script: its record, and its checkpoints on demand."""

    def __init__(self, store: Store, meta: dict[str, Any]) -> None:
        self.store = store
        self.meta = meta
        self.id: str = meta["id"]
        self.script: str = meta.get("script") or "?"
        self._status: str = meta["status"]
        self.started: float = meta.get("started") or 0.0
        self.ended: float | None = meta.get("ended")
        self.exception: str | None = meta.get("exception")
        self._checkpoints: list[Checkpoint] | None = None
        self._blobs: dict[str, int] | None = None
        self.problems: list[str] = [meta["problem"]] if meta["status"] == "damaged" else []

    @property
    def status(self) -> str:
        """As recorded ("running" shown as "killed" once its writer is gone), or "damaged" when
        its record, its list of checkpoints or one of its manifests cannot be read (`problems`
        says which; the readable checkpoints still load)."""
        if self._status != "damaged":
            self.checkpoints  # noqa: B018 -- listing them is what tells
        return self._status

    @classmethod
    def damaged(cls, store: Store, run_id: str, problem: str) -> Run:
        """A run whose record cannot be read: listed, never loaded, removable by gc."""
        return cls(store, {"id": run_id, "status": "damaged", "problem": problem})

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Readable checkpoints, oldest first; unreadable ones are listed in `problems`."""
        if self._checkpoints is None:
            loaded: list[Checkpoint] = []
            self._checkpoints = loaded
            if self._status == "damaged":
                return loaded
            try:
                indexes = self.store.checkpoint_indexes(self.id)
            except StoreError as exc:
                self.problems.append(str(exc))
                self._status = "damaged"
                return loaded
            for index in indexes:
                try:
                    loaded.append(Checkpoint(self, self.store.read_checkpoint(self.id, index)))
                except FileNotFoundError:
                    continue  # thinned by the run's live writer since the listing: not a problem
                except StoreError as exc:
                    self.problems.append(str(exc))
                    self._status = "damaged"  # what it holds can only partly be read
        return self._checkpoints

    @property
    def blobs(self) -> dict[str, int]:
        """hash → size of the data blobs this run refers to (read from manifests only)."""
        if self._blobs is None:
            self._blobs = {}
            for checkpoint in self.checkpoints:
                self._blobs.update(records.manifest_blobs(checkpoint.manifest))
        return self._blobs

    @property
    def size(self) -> int:
        """Bytes of the distinct blobs this run refers to."""
        return sum(self.blobs.values())

    @property
    def duration(self) -> float | None:
        """Seconds from start to end: to now while it runs, to its last checkpoint if it died
        without recording an end (SIGKILL), so it ran at least that long."""
        if not self.started:
            return None
        if self.ended:
            return float(self.ended) - self.started
        if self.status == "running":
            return max(0.0, time.time() - self.started)
        last = self.checkpoints[-1].time if self.checkpoints else None
        return last - self.started if last else None

    @property
    def crash(self) -> Checkpoint | None:
        """The checkpoint taken where the run died, if it crashed."""
        return next((c for c in reversed(self.checkpoints) if c.trigger == "crash"), None)

    def checkpoint(self, selector: str | int | None = None) -> Checkpoint:
        """By index (negative: from the end), or "crash", "exit", "signal", "first", "last" (default)."""
        checkpoints = self.checkpoints
        if self.status == "damaged":
            raise StoreError(self.problems[0])
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
        triggers = ", ".join(dict.fromkeys(c.trigger for c in checkpoints))
        raise NotFound(f"run {self.id} ({os.path.basename(self.script)}, {self.status}) has no "
                       f"{selector} checkpoint (it has: {triggers}){self._elsewhere(str(selector))}")

    def _elsewhere(self, trigger: str) -> str:
        """A hint naming the newest other run of this script that has a `trigger` checkpoint."""
        if trigger not in TRIGGER_SELECTORS:
            return ""
        for other in runs(self.script, self.store):
            if other.id != self.id and any(c.trigger == trigger for c in other.checkpoints):
                return f"; the latest run of it with one is {other.id}@{trigger}"
        return ""

    def __repr__(self) -> str:
        from chkpt.fmt import human_size, plural, relative_time

        return (f"<Run {self.id} {os.path.basename(self.script)} {self.status}, started "
                f"{relative_time(self.started)}, {plural(len(self.checkpoints), 'checkpoint')}, "
                f"{human_size(self.size)}>")


def _closest(name: str, candidates: list[str]) -> str:
    from chkpt.fmt import closest_matches

    close = closest_matches(name, candidates, n=3, cutoff=0.5)
    return f"; closest: {', '.join(close)}" if close else ""


def all_runs(store: Store) -> list[Run]:
    """Every run, newest first. One whose record cannot be read, or may not be (another user's),
    is listed as damaged, where its directory was last changed."""
    found = []
    when: dict[str, float] = {}
    for run_id in store.run_ids():
        try:
            run = Run(store, store.read_run(run_id))
        except FileNotFoundError:
            continue  # being created, or debris gc will remove
        except StoreError as exc:
            run = Run.damaged(store, run_id, str(exc))
        found.append(run)
        when[run_id] = run.started or store.run_last_used(run_id) or 0.0
    found.sort(key=lambda r: when[r.id], reverse=True)
    return found


def matches_script(run: Run, script: str) -> bool:
    """Whether `run` is of `script`: its path (relative to the cwd) or its file name."""
    return is_script(run.script, script)


def runs(script: str | None = None, store: Store | None = None) -> list[Run]:
    """Runs, newest first; `script` (a file name or path) keeps one script's runs."""
    found = all_runs(store or default_store())
    return [r for r in found if script is None or matches_script(r, script)]


def resolve(ref: str | None, store: Store | None = None,
            script: str | None = None) -> tuple[Run, str | None]:
    """The run a reference names, and its checkpoint selector (after "@"); StoreError when
    nothing of that run can be read."""
    run, selector = _resolve(ref, store or default_store(), script)
    if run.status == "damaged" and not run.checkpoints:
        raise StoreError(f"run {run.id} cannot be read: {run.problems[0]}")
    return run, selector


def _resolve(ref: str | None, store: Store, script: str | None) -> tuple[Run, str | None]:
    run_part, _, selector = (ref or "latest").strip().partition("@")
    found = runs(script, store)
    if run_part in ("", "latest") or run_part.startswith("latest:"):
        wanted = run_part.partition(":")[2]
        matching = [r for r in found if matches_script(r, wanted)] if wanted else found
        if matching:
            return matching[0], selector or None
        if not found:
            where = f" of {script}" if script else ""
            raise NotFound(f"no runs{where} in {store.root} yet (run a script with chkpt installed)")
        raise NotFound(f"no run of {wanted} in {store.root}{_closest(wanted, _script_names(found))}")
    matching = [r for r in found if r.id.startswith(run_part)]
    if len(matching) == 1:
        return matching[0], selector or None
    if len(matching) > 1:
        ids = ", ".join(r.id for r in matching[:5])
        raise NotFound(f"run prefix {run_part!r} is ambiguous ({ids})")
    by_script = [r for r in found if matches_script(r, run_part)]
    if by_script:
        return by_script[0], selector or None
    close = _closest(run_part, [r.id for r in found] + _script_names(found))
    if not close and found:
        close = "; latest: " + ", ".join(f"{r.id} ({os.path.basename(r.script)})" for r in found[:3])
    raise NotFound(f"no run {run_part!r} in {store.root}{close}")


def _script_names(found: list[Run]) -> list[str]:
    return [os.path.basename(r.script) for r in found]


def _runs_here(store: Store) -> list[Run]:
    """Runs of scripts in the current directory, or started from it, newest first."""
    cwd = os.getcwd()
    return [r for r in runs(None, store)
            if os.path.dirname(r.script) == cwd or r.meta.get("cwd") == cwd]


def _candidate_runs(run: str | Run | None, script: str | None, store: Store) -> list[tuple[Run, str | None]]:
    """The runs `load`/`history` look in, newest first, each with its checkpoint selector."""
    if isinstance(run, Run):
        return [(run, None)]
    if run is not None or script is not None:
        return [resolve(run, store, script)]
    return [(r, None) for r in _runs_here(store)]


def _not_saved_here(name: str, store: Store) -> NotFound:
    elsewhere = runs(None, store)[:3]
    hint = ""
    if elsewhere:
        hint = "; pass script= or run= (latest runs: " + ", ".join(
            f"{r.id} {os.path.basename(r.script)}" for r in elsewhere) + ")"
    return NotFound(f"no run of a script in {os.getcwd()} saved {name!r}{hint}")


def _never_saved(run: Run, name: str) -> NotFound:
    name = naming.canonical(name)
    names = [n for checkpoint in run.checkpoints for n in checkpoint.names]
    return NotFound(f"run {run.id} never saved {name!r}{_closest(name, names)}")


def load(name: str, run: str | Run | None = None, script: str | None = None,
         store: Store | None = None) -> Any:
    """Variable `name` as last saved: by the run named (a reference or Run) or the latest
    run of `script`; by default the latest run of a script in the current directory that
    saved it. A reference with "@" picks the checkpoint; else the newest that has `name`."""
    store = store or default_store()
    candidates = _candidate_runs(run, script, store)
    for found, selector in candidates:
        if selector:
            return found.checkpoint(selector).load(name)
        for checkpoint in reversed(found.checkpoints):
            try:
                return checkpoint.load(name)
            except NotFound:
                continue
        if run is not None or script is not None:
            raise _never_saved(found, name)
    raise _not_saved_here(name, store)


def history(name: str, run: str | Run | None = None, script: str | None = None,
            store: Store | None = None) -> list[tuple[Checkpoint, Any]]:
    """Every saved version of `name` in one run, oldest first, as (checkpoint, value) pairs.

    The run: as named by `run` or `script`, by default the latest run of a script in the
    current directory that saved `name`.
    """
    store = store or default_store()
    for found, _ in _candidate_runs(run, script, store):
        versions = []
        for checkpoint in found.checkpoints:
            try:
                versions.append((checkpoint, checkpoint.load(name)))
            except NotFound:
                continue
        if versions:
            return versions
        if run is not None or script is not None:
            raise _never_saved(found, name)
    raise _not_saved_here(name, store)
