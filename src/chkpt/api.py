"""The read model: runs → checkpoints → variables, references to them, loading values, selecting runs.

Used by the CLI, resume and notebooks (`chkpt.runs`, `chkpt.load`, `chkpt.history`,
`chkpt.diff`). Listing reads only the run records (their `summary` of the checkpoints, when it
matches the checkpoint files; else the manifests); a variable's data is read when it is
loaded: only the chunks it needs, read once into memory of its own (changing the loaded array
never changes the store). A run whose record cannot be read is listed with status "damaged"; an unreadable
checkpoint is left out and described in its run's `problems`. Times are local `datetime`s;
`Run`, `Checkpoint`, `Variable` and the lists of them show as tables in notebooks.

References: `latest`, `latest:analysis.py`, a run id or id prefix (a whole id names its run
even where it begins a longer one), or a script name (its latest run), each optionally
followed by `@N` (checkpoint index; negative counts from the end), `@crash`, `@exit`,
`@signal`, `@periodic`, `@explicit`, `@first` or `@last` (the default). A bare script name
that names scripts in several folders is ambiguous: the one in the current folder is taken
(and named), else the error names them all. Variable names follow naming.py.
"""

from __future__ import annotations

import datetime
import math
import os
import shlex
import sys
import time

from chkpt import config as config_module
from chkpt import fmt, guard, naming, records, serialize
from chkpt.store import Store, StoreError, is_script

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TRIGGER_SELECTORS = ("crash", "exit", "signal", "periodic", "explicit", "cell", "return")
SELECTORS = ("first", "last", "latest", *TRIGGER_SELECTORS)  # besides checkpoint numbers
STATUSES = (*records.STATUSES, "damaged")  # what a run's status can be, as listed
LOAD_THREADS = 4  # threads reading and decompressing a whole checkpoint's data at once


class NotFound(LookupError):
    """A run, checkpoint or variable that does not exist; the message names it."""


class BadReference(NotFound, ValueError):
    """A reference, script, name or filter that names nothing (empty, blank, a bare `@`, a
    folder for a run) or that is malformed; the message says what was expected."""


class LoadError(Exception):
    """A saved value that cannot be turned back into an object; the message says which and why."""


def nonblank(text: Any, what: str, example: str) -> str:
    """`text` without the blanks around it; BadReference when nothing is left (as an unset shell
    variable leaves it), TypeError when it is no text. `what` and `example` word the message."""
    if not isinstance(text, str):
        raise TypeError(f"{what} is text like {example}, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise BadReference(f"{what} {text!r} names nothing (an unset shell variable?); give e.g. {example}")
    return stripped


_local_stores: dict[str, Store] = {}  # by root: one Store per local store, reused by every call


def default_store() -> Store:
    """The configured store: a local one, or the read cache of a bucket store brought up to date."""
    config = config_module.load(os.getcwd())
    if config.remote:
        from chkpt import shared

        return shared.reading_store(config.remote, config.cache_size, warn=guard.warn)
    found = _local_stores.get(config.store_dir)
    if found is None:
        found = _local_stores[config.store_dir] = Store(config.store_dir)
    return found


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
        self.stored: int = records.variable_stored(entry)  # bytes on disk, shared blobs included

    def load(self, parts: dict[str, Any] | None = None, read: dict[tuple[str, int], Any] | None = None) -> Any:
        """The value; a buffer in one raw blob of 1 MiB or more is memory-mapped, a buffer in
        several chunks is read into one block of memory (no further copy).

        A container saved with its parts on their own (`results`, `model`) loads them too;
        `parts` keeps a part reachable by two paths one object. `read` holds buffers already
        read, by (variable name, position) (`Checkpoint.load_all` reads them in parallel).
        """
        store = self.checkpoint.run.store
        stream = store.read_ref(self.entry["pickle"])
        read = {} if read is None else read
        buffers = [read.pop((self.name, position), None) or store.read_buffer(buffer)
                   for position, buffer in enumerate(self.entry["buffers"])]
        store.touch_run(self.checkpoint.run.id)
        parts = {} if parts is None else parts

        def resolve(name: str) -> Any:  # NotFound makes the part a placeholder with the reason
            if name not in parts:
                reasons = [s["reason"] for s in self.checkpoint.skipped if s["name"] == name]
                if reasons:
                    raise NotFound(reasons[0])
                parts[name] = self.checkpoint.variable(name).load(parts, read)
            return parts[name]

        try:
            try:
                return serialize.loads(stream, buffers, resolve)
            except ModuleNotFoundError as missing:  # a class of the project's own package
                if not self.checkpoint.run.put_code_on_path(missing.name or ""):
                    raise
                return serialize.loads(stream, buffers, resolve)
        except Exception as exc:
            hint = ""
            if "__main__" in str(exc):
                hint = " (its class is defined in the script, which is not imported here)"
            elif "cloudpickle" in str(exc):
                hint = " (it was saved by cloudpickle: pip install 'chkpt[cloudpickle]')"
            raise LoadError(f"cannot load {self.name} from {self.checkpoint.ref}: "
                            f"{type(exc).__name__}: {exc}{hint}") from None

    @property
    def content(self) -> tuple[str, ...]:
        """The hashes of its pickle stream and buffers: equal content, equal tuple."""
        return tuple(ref["hash"] for ref in records.variable_refs(self.entry))

    @property
    def details(self) -> str:
        """"numpy.ndarray 1000x10 float64"."""
        return " ".join(filter(None, [self.type, shape_text(self.shape), self.dtype or ""]))

    def row(self) -> list[str]:
        return [self.name, self.type, shape_text(self.shape), self.dtype or "", fmt.human_size(self.size),
                self.scope]

    def __repr__(self) -> str:
        return f"<Variable {self.name}: {self.details}, {fmt.human_size(self.size)}>"

    def _repr_html_(self) -> str:
        return fmt.html_table(VARIABLE_HEADERS, [self.row()], caption=f"{self.checkpoint.ref}")


VARIABLE_HEADERS = ["NAME", "TYPE", "SHAPE", "DTYPE", "SIZE", "SCOPE"]


def where_text(file: str | None, line: int | None, function: str | None, script: str) -> str:
    """"analysis.py:42", with " in f()" inside a function; "-" when unknown."""
    if not line:
        return "-"
    inside = f" in {function}()" if function and function != "<module>" else ""
    return f"{os.path.basename(file or script)}:{line}{inside}"


def _local(when: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(when)


_NOTHING = object()  # no value at a path


class Checkpoint:
    """One checkpoint's manifest: when and where it was taken, what it saved and skipped."""

    def __init__(self, run: Run, manifest: dict[str, Any]) -> None:
        self.run = run
        self.manifest = manifest
        self.index: int = manifest["index"]
        self.trigger: str = manifest["trigger"]
        self.time: float = manifest["time"]  # Unix time of the safe point
        self.taken = _local(self.time)  # the same, as a local datetime
        self.file: str | None = manifest.get("file")
        self.line: int | None = manifest.get("line")
        self.function: str | None = manifest.get("function")
        self.label: str = manifest["label"]
        self.exception: str | None = manifest.get("exception")
        self.skipped: list[dict[str, str]] = manifest["skipped"]
        self.aliases: dict[str, str] = manifest["aliases"]
        self._variables: list[Variable] | None = None
        # a notebook's: the cells run since the checkpoint before, the last being the one it follows
        self.cells: list[dict[str, Any]] = manifest.get("cells") or []
        self.cell: int | None = self.cells[-1]["count"] if self.cells and self.cells[-1]["state"] == "this" else None

    @property
    def ref(self) -> str:
        """A reference that names this checkpoint: `RUN@N`."""
        return f"{self.run.id}@{self.index}"

    @property
    def where(self) -> str:
        """"analysis.py:42", with " in f()" inside a function; "cell [12]" for a notebook's; "-"
        when unknown."""
        if self.cell is not None:
            return f"cell [{self.cell}]"
        return where_text(self.file, self.line, self.function, self.run.script)

    @property
    def outside_script(self) -> bool:
        """Whether it was taken in another file than the script (one of the user's modules)."""
        return bool(self.file) and os.path.abspath(self.file) != os.path.abspath(self.run.script)

    @property
    def description(self) -> str:
        """"crash at analysis.py:16 in normalise()", "exit", "explicit (epoch 0) at a.py:12"."""
        label = f" ({self.label})" if self.label else ""
        if self.trigger == "cell":
            return f"after {self.where}{label}"
        where = f" at {self.where}" if self.line else ""
        return f"{self.trigger}{label}{where}"

    @property
    def variables(self) -> list[Variable]:
        """Its saved values, in natural order of their names (made on first use: loading one
        value by name needs only its own)."""
        if self._variables is None:
            self._variables = sorted((Variable(self, v) for v in self.manifest["variables"]),
                                     key=lambda v: fmt.natural_key(v.name))
        return self._variables

    @property
    def size(self) -> int:
        """Bytes of the values saved (shared or unchanged data counted in full)."""
        return sum(v.size for v in self.variables)

    @property
    def names(self) -> list[str]:
        """Every name a value can be loaded by: saved names, then aliases."""
        return [v.name for v in self.variables] + list(self.aliases)

    def variable(self, name: str) -> Variable:
        name = naming.canonical(nonblank(name, "a variable name", "df or results['train']"))
        target = self.aliases.get(name, name)
        for entry in self.manifest["variables"]:
            if entry["name"] == target:
                return Variable(self, entry)
        if target != name:  # an alias of a path inside a saved value (`l2` → `l[3]`)
            raise NotFound(f"{name!r} of {self.ref} is {target}, saved inside {naming.root_of(target)}: "
                           f"load it with chkpt.load({name!r}), or take {naming.root_of(target)}")
        if self.manifest.get("not_final"):  # a main() local whose final value was not saved
            earlier = next((c for c in reversed(self.run.checkpoints) if c is not self and name in c), None)
            stale = _not_final(self.run, earlier, name) if earlier is not None else None
            if stale is not None:
                raise stale
        returned = next((c for c in self.run.checkpoints if c.trigger == "return" and c.index < self.index
                         and name in c), None) if self.trigger in records.FINAL_TRIGGERS else None
        hint = (f"; {returned.ref} has it, as {returned.function}() returned" if returned is not None
                else _closest(name, self.names) or f"; it has: {', '.join(self.names[:10]) or 'nothing'}")
        raise NotFound(f"no variable {name!r} in {self.ref}{hint}")

    def load(self, name: str) -> Any:
        """A saved value, or a value inside one (`results['train']['x']`, `model.weights`)."""
        try:
            return self.variable(name).load()
        except NotFound:
            found = self._inside(self.aliases.get(naming.canonical(name), name), {}, None)
            if found is not _NOTHING:
                return found
            raise

    def part(self, name: str, parts: dict[str, Any], read: dict[tuple[str, int], Any] | None = None) -> Any:
        """The value saved as `name`, or at path `name` inside a saved value (what an alias may
        name), loaded once into `parts`, which every value loaded with it shares; NotFound when
        there is none."""
        if name in parts:
            return parts[name]
        if name in self.aliases:
            return self.part(self.aliases[name], parts, read)
        if any(entry["name"] == name for entry in self.manifest["variables"]):
            parts[name] = self.variable(name).load(parts, read)
            return parts[name]
        found = self._inside(name, parts, read)
        if found is _NOTHING:
            raise NotFound(f"no variable {name!r} in {self.ref}")
        return found

    def _inside(self, path: str, parts: dict[str, Any], read: dict[tuple[str, int], Any] | None) -> Any:
        """The value at `path` inside a saved value (an alias may name one: a value that holds a
        value it is in, kept in its pickle); _NOTHING when no saved value is above `path`."""
        for prefix, steps in naming.prefixes(path):
            if prefix in self:
                if prefix not in parts:
                    parts[prefix] = self.variable(prefix).load(parts, read)
                return naming.follow(parts[prefix], steps)
        return _NOTHING

    def load_all(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Every saved value of the checkpoint that has a name of its own (not a path below
        another), aliases included, by name; and the names whose value could not be loaded, with
        the reason. A value reachable by several names is one object.

        The data is read and decompressed by up to LOAD_THREADS threads at once (reading files
        and zstd let go of the GIL), then unpickled here; a raw chunk of 1 MiB or more is
        memory-mapped, so the OS reads it in as it is used.
        """
        read = self._read_buffers()
        parts: dict[str, Any] = {}
        failed: dict[str, str] = {}
        for variable in self.variables:
            if naming.root_of(variable.name) is None and variable.name not in parts:
                try:
                    parts[variable.name] = variable.load(parts, read)
                except (LoadError, StoreError) as exc:  # that value only: the others still load
                    failed[variable.name] = str(exc)
        values = {name: value for name, value in parts.items() if naming.root_of(name) is None}
        for alias, target in self.aliases.items():
            if naming.root_of(alias) is None and target not in failed:
                try:
                    values[alias] = self.part(target, parts, read)
                except (LoadError, LookupError, StoreError) as exc:
                    failed[alias] = str(exc)
        return values, failed

    def _read_buffers(self) -> dict[tuple[str, int], Any]:
        """The buffers of every variable not stored in a pack, by (variable name, position), read by
        several threads (a shared store's read cache is read one buffer at a time)."""
        wanted = [(variable.name, position, buffer) for variable in self.variables
                  for position, buffer in enumerate(variable.entry["buffers"])
                  if not any("pack" in ref for ref in records.chunks(buffer))]
        store = self.run.store
        if len(wanted) < 2 or store.shared:
            return {}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(LOAD_THREADS, len(wanted))) as pool:
            data = list(pool.map(lambda found: store.read_buffer(found[2]), wanted))
        return {(name, position): buffer for (name, position, _), buffer in zip(wanted, data, strict=True)}

    def __getitem__(self, name: str) -> Any:
        return self.load(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and naming.canonical(name) in self.names

    def __repr__(self) -> str:
        return (f"<Checkpoint {self.ref} {self.description}, {fmt.date_time(self.time)}, "
                f"{fmt.plural(len(self.variables), 'variable')}>")

    def _repr_html_(self) -> str:
        caption = f"checkpoint {self.ref}: {self.description}, {fmt.date_time(self.time)}"
        if self.exception:
            caption += f": {self.exception}"
        return fmt.html_table(VARIABLE_HEADERS, [v.row() for v in self.variables], caption)


class Run:
    """One run of a script: its record, and its checkpoints on demand."""

    def __init__(self, store: Store, meta: dict[str, Any]) -> None:
        self.store = store
        self.meta = meta
        self.id: str = meta["id"]
        self.script: str = meta.get("script") or "?"
        self._status: str = meta["status"]
        self.start_time: float = meta.get("started") or 0.0  # Unix time
        self.started: datetime.datetime | None = _local(self.start_time) if self.start_time else None
        self.ended: datetime.datetime | None = _local(meta["ended"]) if meta.get("ended") else None
        self.exception: str | None = meta.get("exception")
        self._checkpoints: list[Checkpoint] | None = None
        self._mtimes: dict[int, float] | None = None
        self._summary: dict[str, Any] | None = None
        self.problems: list[str] = [meta["problem"]] if meta["status"] == "damaged" else []

    @property
    def status(self) -> str:
        """As recorded ("running" shown as "killed" once its writer is gone, a crash by Ctrl-C as
        "interrupted"), or "damaged" when its record, its list of checkpoints or one of its
        manifests cannot be read (`problems` says which; the readable checkpoints still load)."""
        if self._status != "damaged":
            self.summary  # noqa: B018 -- reading it (or the manifests) is what tells
        if self._status == "crashed" and self.exception == "KeyboardInterrupt":
            return "interrupted"  # recorded before runs had that status
        return self._status

    @classmethod
    def damaged(cls, store: Store, run_id: str, problem: str) -> Run:
        """A run whose record cannot be read: listed, never loaded, removable by gc."""
        return cls(store, {"id": run_id, "status": "damaged", "problem": problem})

    @property
    def indexes(self) -> list[int]:
        """The indexes of its checkpoint files (a directory listing; no manifest is read)."""
        return list(self._manifest_mtimes)

    @property
    def _manifest_mtimes(self) -> dict[int, float]:
        if self._mtimes is None:
            self._mtimes = {}
            if self._status != "damaged":
                try:
                    self._mtimes = self.store.checkpoint_mtimes(self.id)
                except StoreError as exc:
                    self.problems.append(str(exc))
                    self._status = "damaged"
        return self._mtimes

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Readable checkpoints, oldest first; unreadable ones are listed in `problems`."""
        if self._checkpoints is None:
            loaded: list[Checkpoint] = []
            for index in self.indexes:
                try:
                    loaded.append(Checkpoint(self, self.store.read_checkpoint(self.id, index)))
                except FileNotFoundError:
                    continue  # thinned by the run's live writer since the listing: not a problem
                except StoreError as exc:
                    self.problems.append(str(exc))
                    self._status = "damaged"  # what it holds can only partly be read
            self._checkpoints = loaded
        return self._checkpoints

    @property
    def summary(self) -> dict[str, Any]:
        """What listing needs of its checkpoints (see records.SUMMARY_FIELDS): the one its writer
        kept in run.json while it is current (`records.current_summary`), else made from the
        manifests (which then also tell whether the run is damaged)."""
        if self._summary is None:
            self._summary = (records.current_summary(self.meta, self._manifest_mtimes)
                             or records.summarize([c.manifest for c in self.checkpoints]))
        return self._summary

    @property
    def checkpoint_count(self) -> int:
        return len(self.summary["indexes"])

    @property
    def blobs(self) -> dict[str, int]:
        """hash → size of the data blobs its checkpoints refer to."""
        blobs: dict[str, int] = self.summary["blobs"]
        return blobs

    @property
    def size(self) -> int:
        """Bytes of data (before compression) of the distinct blobs this run refers to."""
        return records.raw_size(self.blobs, self.summary.get("compressed", {}))

    @property
    def stored(self) -> int:
        """Bytes its distinct blobs take on disk (shared with other runs or not)."""
        return sum(self.blobs.values())

    @property
    def pinned(self) -> bool:
        """Whether `chkpt pin` keeps it from eviction."""
        return self._status != "damaged" and self.store.is_pinned(self.id)

    @property
    def folder(self) -> str:
        """The directory of its script."""
        return os.path.dirname(self.script)

    def put_code_on_path(self, module: str) -> bool:
        """Put the folder where the run's code found the package of `module` (its script's
        folder, or the directory it ran in: `python -m`) at the end of sys.path, so that
        objects of the project's own classes load here as they did there; False when neither
        holds it (or it is on the path already)."""
        top = module.partition(".")[0]
        for folder in (self.folder, self.meta.get("cwd")):
            if not isinstance(folder, str) or not top or folder in sys.path:
                continue
            if os.path.isdir(os.path.join(folder, top)) or os.path.isfile(os.path.join(folder, f"{top}.py")):
                sys.path.append(folder)
                return True
        return False

    @property
    def notebook(self) -> bool:
        """Whether it is a notebook kernel's run (its `script` is the notebook's path)."""
        return self.meta.get("kind") == "notebook"

    @property
    def args(self) -> list[str]:
        """The script's command-line arguments (after `-m module` for a module run; none for a
        notebook: its argv is the kernel's)."""
        argv = list(self.meta.get("argv") or [])
        if self.notebook:
            return []
        return argv[2:] if argv[:1] == ["-m"] else argv[1:]

    @property
    def module(self) -> str | None:
        """The module name of a run started by `python -m module`, else None."""
        argv = list(self.meta.get("argv") or [])
        return argv[1] if argv[:1] == ["-m"] and len(argv) > 1 and not self.notebook else None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end: to now while it runs; for a run killed without recording its
        end (SIGKILL), to its last sign of life (heartbeat or checkpoint), so it ran at least that."""
        if not self.start_time:
            return None
        if self.meta.get("ended"):
            return float(self.meta["ended"]) - self.start_time
        if self.status == "running":
            return max(0.0, time.time() - self.start_time)
        last = max(self.meta.get("heartbeat") or 0, self.summary.get("last_time") or 0)
        return last - self.start_time if last else None

    @property
    def crash(self) -> Checkpoint | None:
        """The checkpoint taken where the run died, if it crashed."""
        return next((c for c in reversed(self.checkpoints) if c.trigger == "crash"), None)

    @property
    def crash_where(self) -> str:
        """Where it crashed, "analysis.py:16 in normalise()" ("-" when unknown), from the summary."""
        place = self.summary.get("crash") or {}
        return where_text(place.get("file"), place.get("line"), place.get("function"), self.script)

    @property
    def end_text(self) -> str:
        """How it ended, for people: "crashed at train.py:42 in step(): ValueError: …"."""
        status = self.status
        if status in ("crashed", "interrupted"):
            where = self.crash_where
            at = f" at {where}" if where != "-" else ""
            return f"crashed{at}: {self.exception or '?'}" if status == "crashed" else f"interrupted (Ctrl-C){at}"
        code = self.meta.get("exit_code")
        if status == "finished" and code not in (0, None):
            return f"finished, exit code {code}"
        if status == "killed":
            signal = self.summary.get("signal")
            return f"killed ({signal})" if signal else "killed (died without exiting)"
        return status

    def checkpoint(self, selector: str | int | None = None) -> Checkpoint:
        """By index (negative: from the end), or "crash", "exit", "signal", "first", "last" (default)."""
        checkpoints = self.checkpoints
        if self.status == "damaged":
            raise StoreError(self.problems[0])
        if not checkpoints:
            raise NotFound(f"run {self.id} has no readable checkpoint")
        if isinstance(selector, str):
            selector = nonblank(selector, "a checkpoint selector", "crash, exit, first or 2")
        if selector in (None, "last", "latest"):
            return checkpoints[-1]
        if selector == "first":
            return checkpoints[0]
        wanted = _checkpoint_number(selector)
        if wanted is not None:
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
        if selector not in SELECTORS:
            close = fmt.closest_matches(str(selector), SELECTORS)
            hint = f"did you mean {close[0]}? " if close else ""
            raise BadReference(f"no checkpoint is called {selector!r} ({hint}a checkpoint is a number, "
                               f"{', '.join(SELECTORS)}); run {self.id} has: {triggers}")
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

    def row(self) -> list[str]:
        started = fmt.date_time(self.start_time) if self.start_time else "-"
        return [self.id + (" (pinned)" if self.pinned else ""), os.path.basename(self.script),
                shlex.join(self.args), started, fmt.human_duration(self.duration),
                str(self.checkpoint_count), fmt.human_size(self.size), self.end_text]

    def __repr__(self) -> str:
        started = fmt.date_time(self.start_time) if self.start_time else "?"
        return (f"<Run {self.id} {os.path.basename(self.script)} {self.status}, started {started}, "
                f"{fmt.plural(self.checkpoint_count, 'checkpoint')}, {fmt.human_size(self.size)}>")

    def _repr_html_(self) -> str:
        caption = (f"run {self.id} {self.script} {shlex.join(self.args)}: {self.end_text}, "
                   f"started {fmt.date_time(self.start_time)}, ran {fmt.human_duration(self.duration)}")
        rows = [[str(c.index), c.trigger, c.label, fmt.date_time(c.time), c.where,
                 str(len(c.variables)), fmt.human_size(c.size)] for c in self.checkpoints]
        return fmt.html_table(["#", "TRIGGER", "LABEL", "TIME", "WHERE", "VARS", "SIZE"], rows, caption)


RUN_HEADERS = ["RUN", "SCRIPT", "ARGS", "STARTED", "DURATION", "CKPTS", "SIZE", "STATUS"]


def _checkpoint_number(selector: str | int | None) -> int | None:
    """The checkpoint number a selector gives ("4", "-1", 4), None when it gives none."""
    if isinstance(selector, int) and not isinstance(selector, bool):
        return selector
    digits = str(selector).removeprefix("-")
    if not (digits.isascii() and digits.isdecimal()) or len(digits) > 18:
        return None
    return int(selector)  # type: ignore[arg-type]


class Runs(list[Run]):
    """A list of runs that shows as a table in a notebook."""

    def _repr_html_(self) -> str:
        return fmt.html_table(RUN_HEADERS, [run.row() for run in self], caption=fmt.plural(len(self), "run"))


def _closest(name: str, candidates: list[str]) -> str:
    close = fmt.closest_matches(name, candidates, n=3, cutoff=0.5)
    return f"; closest: {', '.join(close)}" if close else ""


def all_runs(store: Store) -> list[Run]:
    """Every run, newest first. One whose record cannot be read, or may not be (another user's),
    is listed as damaged, where its directory was last changed."""
    found = []
    when: dict[str, float] = {}
    for run_id in store.run_ids():
        run = _read_run(store, run_id)
        if run is None:
            continue
        found.append(run)
        when[run_id] = run.start_time or store.run_last_used(run_id) or 0.0
    found.sort(key=lambda r: when[r.id], reverse=True)
    return found


def _read_run(store: Store, run_id: str) -> Run | None:
    """The run `run_id` (damaged when its record cannot be read); None when it has no record."""
    try:
        return Run(store, store.read_run(run_id))
    except FileNotFoundError:
        return None  # being created, or debris gc will remove
    except StoreError as exc:
        return Run.damaged(store, run_id, str(exc))


def matches_script(run: Run, script: str) -> bool:
    """Whether `run` is of `script`: its path (relative to the cwd, "~" allowed), its file name,
    a folder it is in (at any depth), or for a run of `python -m pkg.mod`, `pkg.mod`."""
    wanted = os.path.expanduser(script)
    if is_script(run.script, wanted) or (run.module is not None and run.module == script):
        return True
    folder = os.path.abspath(wanted)
    return os.path.isdir(folder) and run.script.startswith(folder.rstrip(os.sep) + os.sep)


def runs(script: str | None = None, store: Store | None = None, *, status: str | list[str] | None = None,
         since: str | float | None = None, until: str | float | None = None) -> Runs:
    """Runs, newest first; `script` (a file name, path or folder) keeps one script's runs,
    `status` those that ended so ("crashed", or a list), `since`/`until` those started in
    that window (Unix times, or "1h", "2d", "2025-06-03", "2025-06-03 14:00")."""
    return select(all_runs(store or default_store()), script=script, status=status, since=since, until=until)


def select(found: list[Run], *, script: str | None = None, status: str | list[str] | None = None,
           since: str | float | None = None, until: str | float | None = None) -> Runs:
    """The runs of `found` that pass every filter given (see `runs`), in their order; BadReference
    for a filter that names nothing or an unknown status."""
    if script is not None:
        script = nonblank(script, "script", "train.py, ~/proj/train.py or a folder")
    statuses = None if status is None else parse_statuses(status)
    start = None if since is None else parse_when(since)
    end = None if until is None else parse_when(until)
    return Runs(r for r in found
                if (script is None or matches_script(r, script))
                and (statuses is None or r.status in statuses)
                and (start is None or r.start_time >= start)
                and (end is None or r.start_time <= end))


def parse_statuses(status: str | list[str]) -> list[str]:
    """"crashed,killed" (or a list of statuses) → ["crashed", "killed"]; BadReference for an
    unknown status, or none."""
    wanted = [part.strip() for part in (status.split(",") if isinstance(status, str) else status)]
    wanted = [part for part in wanted if part]
    for name in wanted:
        if name not in STATUSES:
            close = fmt.closest_matches(name, STATUSES)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise BadReference(f"unknown status {name}{hint} (statuses: {', '.join(STATUSES)})")
    if not wanted:
        raise BadReference(f"status {status!r} names no status (statuses: {', '.join(STATUSES)})")
    return wanted


def parse_when(when: str | float, now: float | None = None) -> float:
    """A Unix time from a time ago ("90s", "1h", "2d"), a date or date and time ("2025-06-03",
    "2025-06-03 14:00", local time), or a Unix time; ConfigError when it is none of these."""
    if isinstance(when, int | float) and not isinstance(when, bool):
        if not math.isfinite(when):
            raise config_module.ConfigError(f"expected a Unix time, got {when!r}")
        return float(when)
    try:
        return (time.time() if now is None else now) - config_module.parse_duration(when)
    except config_module.OutOfRange:
        raise
    except config_module.ConfigError:
        pass
    try:
        return datetime.datetime.fromisoformat(str(when).strip()).timestamp()
    except (ValueError, OverflowError):
        raise config_module.ConfigError(
            f"expected a time ago like 1h or 2d, or a date like 2025-06-03 [14:00], got {when!r}") from None


def _script_runs(found: list[Run], wanted: str) -> list[Run]:
    """As `_one_script`, for a script a reference names: BadReference for a folder (it is no
    script, and taking the latest run of its scripts would act on a run nobody named)."""
    wanted = nonblank(wanted, "script", "train.py")
    if os.path.isdir(os.path.expanduser(wanted)):
        inside = list(dict.fromkeys(os.path.basename(r.script) for r in found if matches_script(r, wanted)))
        scripts = f"its scripts: {', '.join(inside[:3])}" if inside else "no run of a script in it"
        raise BadReference(f"{wanted} is a folder, not a run or a script ({scripts}); name a run id, "
                           "latest, or a script")
    return _one_script(found, wanted)


def _one_script(found: list[Run], wanted: str) -> list[Run]:
    """The runs of `found` that are of the script `wanted`, which must name one script.

    A bare name that matches scripts in several folders takes the one in the current folder
    (saying so), else raises NotFound naming them.
    """
    matching = [r for r in found if matches_script(r, wanted)]
    scripts = list(dict.fromkeys(r.script for r in matching))
    if len(scripts) <= 1 or os.sep in wanted:
        return matching
    here = [s for s in scripts if os.path.dirname(s) == os.getcwd()]
    shown = ", ".join(fmt.short_path(s, 60) for s in scripts[:5])
    if len(here) == 1:
        guard.warn(f"{wanted} ran in {len(scripts)} folders ({shown}); "
                   f"taking the one here, {here[0]}")
        return [r for r in matching if r.script == here[0]]
    raise NotFound(f"{wanted} names {len(scripts)} scripts: {shown}; "
                   f"give its path (e.g. {fmt.short_path(scripts[0], 60)})")


def resolve(ref: str | None, store: Store | None = None,
            script: str | None = None) -> tuple[Run, str | None]:
    """The run a reference names, and its checkpoint selector (after "@"); StoreError when
    nothing of that run can be read; BadReference when it names nothing (`reference_parts`)."""
    run, selector = _resolve(ref, store or default_store(), script)
    if run.status == "damaged" and not run.checkpoints:
        raise StoreError(f"run {run.id} cannot be read: {run.problems[0]}")
    return run, selector


def find(ref: str | None, store: Store | None = None) -> tuple[Run, str | None]:
    """As `resolve`, but a damaged run is returned too (to be deleted, say)."""
    return _resolve(ref, store or default_store(), None)


def reference_parts(ref: str | None) -> tuple[str, str | None]:
    """A reference's run part and checkpoint selector (None: the last); None means `latest`.

    BadReference when a part is empty: "", blanks, "@crash", "latest@", "latest:" are what
    `"$RUN@crash"` and friends become when a shell variable is unset, and name nothing.
    """
    if ref is None:
        return "latest", None
    text = nonblank(ref, "run reference", "latest, latest:train.py, 3fa2 or 3fa2@crash")
    run_part, at, selector = (part.strip() for part in text.partition("@"))
    if not run_part:
        raise BadReference(f"{ref!r} names no run before '@'; give e.g. latest{text} for the newest run's")
    if at and not selector:
        raise BadReference(f"{ref!r} names no checkpoint after '@'; give e.g. {run_part}@crash or "
                           f"{run_part}@2 (without '@': the last)")
    if run_part.startswith("latest:") and not run_part.removeprefix("latest:").strip():
        raise BadReference(f"{ref!r} names no script after 'latest:'; give e.g. latest:train.py")
    return run_part, selector or None


def _resolve(ref: str | None, store: Store, script: str | None) -> tuple[Run, str | None]:
    run_part, selector = reference_parts(ref)
    if script is None and run_part != "latest" and not run_part.startswith("latest:"):
        ids = store.find_run_ids(run_part)
        run = _read_run(store, ids[0]) if len(ids) == 1 else None
        if run is not None:  # the one run of that id (prefix): the others' records need not be read
            return run, selector
    found = all_runs(store)
    if script is not None:
        found = _script_runs(found, script)
    if run_part == "latest" or run_part.startswith("latest:"):
        wanted = run_part.partition(":")[2].strip()
        matching = _script_runs(found, wanted) if wanted else found
        if matching:
            return matching[0], selector
        if not found:
            where = f" of {script}" if script else ""
            raise NotFound(f"no runs{where} in {store.location} yet (run a script with chkpt installed)")
        raise NotFound(f"no run of {wanted} in {store.location}{_closest(wanted, _script_names(found))}")
    matching = [r for r in found if r.id.startswith(run_part)]
    if len(matching) == 1:
        return matching[0], selector
    if len(matching) > 1:
        ids = ", ".join(r.id for r in matching[:5])
        raise NotFound(f"run prefix {run_part!r} is ambiguous ({ids})")
    by_script = _script_runs(found, run_part)
    if by_script:
        return by_script[0], selector
    close = _closest(run_part, [r.id for r in found] + _script_names(found))
    if not close and found:
        close = "; latest: " + ", ".join(f"{r.id} ({os.path.basename(r.script)})" for r in found[:3])
    raise NotFound(f"no run {run_part!r} in {store.location}{close}")


def checkpoint_at(ref: str | Checkpoint, store: Store | None = None) -> Checkpoint:
    """The checkpoint a reference names (`latest@crash`, `3fa2@4`), or `ref` itself."""
    if isinstance(ref, Checkpoint):
        return ref
    run, selector = resolve(ref, store)
    return run.checkpoint(selector)


def previous(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint taken before `checkpoint` in its run; NotFound for the first."""
    earlier = [c for c in checkpoint.run.checkpoints if c.index < checkpoint.index]
    if not earlier:
        raise NotFound(f"{checkpoint.ref} is the first checkpoint of its run; name the other one")
    return earlier[-1]


def _script_names(found: list[Run]) -> list[str]:
    return [os.path.basename(r.script) for r in found]


def _runs_here(store: Store) -> list[Run]:
    """Runs of scripts in the current directory, or started from it, newest first."""
    cwd = os.getcwd()
    return [r for r in all_runs(store)
            if os.path.dirname(r.script) == cwd or r.meta.get("cwd") == cwd]


def _candidate_runs(run: str | Run | None, script: str | None, store: Store) -> list[tuple[Run, str | None]]:
    """The runs `load`/`history` look in, newest first, each with its checkpoint selector."""
    if isinstance(run, Run):
        return [(run, None)]
    if run is not None and not isinstance(run, str):
        raise TypeError(f"run= takes a reference like 'latest@crash' or a Run, not {type(run).__name__}")
    if run is not None or script is not None:
        return [resolve(run, store, script)]
    return [(r, None) for r in _runs_here(store)]


def _not_saved_here(name: str, store: Store) -> NotFound:
    elsewhere = all_runs(store)[:3]
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
    nonblank(name, "a variable name", "df or results['train']")
    store = store or default_store()
    candidates = _candidate_runs(run, script, store)
    for found, selector in candidates:
        if selector:
            return found.checkpoint(selector).load(name)
        for checkpoint in reversed(found.checkpoints):
            try:
                value = checkpoint.load(name)
            except NotFound:
                continue
            stale = _not_final(found, checkpoint, name)
            if stale is not None:
                raise stale
            return value
        if run is not None or script is not None:
            raise _never_saved(found, name)
    raise _not_saved_here(name, store)


def _not_final(run: Run, checkpoint: Checkpoint, name: str) -> NotFound | None:
    """Why `name` as saved by `checkpoint` is not its final value: the run ended without
    main()'s final locals saved (the last checkpoint says so: no sys.monitoring tool id was free
    to see main() return) and `checkpoint` was taken inside main(); None when it is."""
    function = run.checkpoints[-1].manifest.get("not_final")
    if not function or checkpoint is run.checkpoints[-1] or \
            not any(e.get("function") == function and "file" not in e for e in checkpoint.manifest.get("stack", [])):
        return None
    name = naming.canonical(name)
    return NotFound(f"{name!r} of run {run.id} is saved only as it was at checkpoint {checkpoint.index} inside "
                    f"{function}(), not as {function}() ended (its final locals could not be saved: every "
                    f"sys.monitoring tool id chkpt uses was taken); load that value with "
                    f"chkpt.load({name!r}, run={checkpoint.ref!r})")


class History(list[tuple[Checkpoint, object]]):
    """Saved versions of one variable, oldest first, as (checkpoint, value) pairs; numbers show
    as a sparkline."""

    def __init__(self, name: str, versions: list[tuple[Checkpoint, Any]]) -> None:
        super().__init__(versions)
        self.name = name

    @property
    def numbers(self) -> list[float] | None:
        """The values as floats when every one is a single number, else None."""
        numbers = []
        for _, value in self:
            number = _as_number(value)
            if number is None:
                return None
            numbers.append(number)
        return numbers

    def _lines(self) -> list[str]:
        lines = []
        for checkpoint, value in self:
            number = _as_number(value)
            shown = f"{number:.6g}" if number is not None else fmt.shorten(repr(value), 60)
            lines.append(f"  {checkpoint.ref:<12} {fmt.date_time(checkpoint.time)}  "
                         f"{checkpoint.description:<30}  {shown}")
        return lines

    def __repr__(self) -> str:
        run_count = len({checkpoint.run.id for checkpoint, _ in self})
        head = (f"<History of {self.name}: {fmt.plural(len(self), 'version')} in "
                f"{fmt.plural(run_count, 'run')}")
        numbers = self.numbers
        if numbers and len(numbers) > 1:
            head += f" {fmt.sparkline(numbers)} {numbers[0]:.4g} → {numbers[-1]:.4g}"
        return "\n".join([head + ">", *self._lines()])

    def _repr_html_(self) -> str:
        numbers = self.numbers
        caption = f"history of {self.name}"
        if numbers and len(numbers) > 1:
            caption += f" {fmt.sparkline(numbers)}"
        rows = [[c.ref, os.path.basename(c.run.script), shlex.join(c.run.args), fmt.date_time(c.time),
                 c.description, fmt.shorten(repr(value), 80)] for c, value in self]
        return fmt.html_table(["CHECKPOINT", "SCRIPT", "ARGS", "TIME", "TAKEN", "VALUE"], rows, caption)


def _as_number(value: Any) -> float | None:
    """A single int or float (also a numpy scalar or one-element array) as a float, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if type(value).__module__.split(".")[0] == "numpy" and getattr(value, "size", None) == 1 \
            and getattr(value, "dtype", None) is not None and value.dtype.kind in "iuf":
        return float(value.reshape(-1)[0]) if hasattr(value, "reshape") else float(value)
    return None


def history(name: str, run: str | Run | None = None, script: str | None = None,
            store: Store | None = None, *, across_runs: bool = False) -> History:
    """Every saved version of `name` in one run, oldest first, as (checkpoint, value) pairs.

    The run: as named by `run` or `script`, by default the latest run of a script in the
    current directory that saved `name`. `across_runs=True` gives instead the last version
    saved by each run of that run's script, oldest run first (to compare runs with different
    arguments).
    """
    nonblank(name, "a variable name", "df or results['train']")
    store = store or default_store()
    for found, _ in _candidate_runs(run, script, store):
        if across_runs:
            versions = _last_versions(all_runs(store), found.script, name)
        else:
            versions = _versions(found.checkpoints, name)
        if versions:
            return History(naming.canonical(name), versions)
        if run is not None or script is not None:
            raise _never_saved(found, name)
    raise _not_saved_here(name, store)


def _versions(checkpoints: list[Checkpoint], name: str) -> list[tuple[Checkpoint, Any]]:
    versions = []
    for checkpoint in checkpoints:
        try:
            versions.append((checkpoint, checkpoint.load(name)))
        except NotFound:
            continue
    return versions


def _last_versions(found: list[Run], script: str, name: str) -> list[tuple[Checkpoint, Any]]:
    """The newest version of `name` of each run of `script` (the exact path), oldest run first."""
    versions = []
    for other in reversed(found):
        if other.script != script or other.status == "damaged":
            continue
        for checkpoint in reversed(other.checkpoints):
            try:
                versions.append((checkpoint, checkpoint.load(name)))
                break
            except NotFound:
                continue
    return versions
