"""Takes one checkpoint: scope → capture → serialization → store, within the size limits.

Imported at a process's first checkpoint, never at start-up; the run is created only when
there is something to record, so a script with no data leaves no trace.

Every checkpoint holds each value as it was at its safe point. During the pause: capture,
pickling (large buffers out of band, not copied), hashing in fixed-size chunks (only the chunks
the store lacks are new), copying the new chunks and small parts (packed together) within
`memory_budget`, and writing the rest of the program's memory the store lacks straight to it
(no copy; each such blob is hashed again before it is renamed into place, so another thread
writing to the array meanwhile can never give a blob a wrong name: that variable is then
skipped). Large amounts of hashing and writing during the pause are spread over up to four
threads. What is held (copies and pickle streams) is compressed and written by a background
thread (a bare `_thread` with every signal blocked), which also commits the manifest.

- One checkpoint is written at a time: a periodic one that falls due while the previous one
  is still being written is skipped; any other waits for it. Exit, crash and signal
  checkpoints are written by the calling thread, so they are complete before the process ends.
- A store that cannot be written gives one warning and turns checkpoints off for the rest of
  the run; what was committed before stays loadable.
- Limits: when a checkpoint's new data would exceed `max_checkpoint_size`, the values with the
  most new data are dropped first; past `max_run_size` only values already stored are
  recorded. Every drop is listed in the manifest's `skipped`.
"""

from __future__ import annotations

import _signal
import _thread
import os
import sys
import time

from chkpt import capture, cleanup, guard, plain, records, salience, serialize, unseen
from chkpt.fmt import human_size
from chkpt.store import CHUNK_SIZE, FileLock, RunWriter, Store, StoreError, hash_buffer
from chkpt.store.threads import parallel, wait_gone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    from chkpt.config import Config
    from chkpt.sync import Uploader

CHANGED = "changed by another thread while it was being saved"
PARALLEL_WORK = 16 << 20  # from this many bytes, chunks are hashed and written by several threads
MAX_THREADS = 4
PACK_LIMIT = 64 << 10  # pickle streams and buffers this small share one pack blob per checkpoint


class _Plan:
    """A checkpoint ready to write: its variables, and the blobs the store lacks."""

    def __init__(self) -> None:
        self.variables: list[dict[str, Any]] = []
        # hash → (bytes-like: the program's memory for buffers, the manifest's reference to it,
        # completed with its codec once written compressed)
        self.new: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.fixed: set[str] = set()  # hashes of parts whose memory cannot change (serialize.Fixed)
        self.new_bytes = 0
        self.pack: list[bytes] = []  # the new small streams and buffers, stored together as one blob
        self.pack_ref: dict[str, Any] = {}  # the pack's reference, completed by `close_pack`
        self.packed: dict[str, dict[str, Any]] = {}  # hash → reference of each small part used
        self.pack_bytes = 0

    def add_to_pack(self, digest: str, data: Any) -> bool:
        """Copy a small part into the pack; False if another thread changed it since it was hashed."""
        data = bytes(data)
        if hash_buffer(data) != digest:
            return False
        self.pack.append(data)
        self.packed[digest] = dict(records.blob_ref(digest, len(data)), pack=self.pack_ref, offset=self.pack_bytes)
        self.pack_bytes += len(data)
        return True

    def close_pack(self, store: Store) -> None:
        """Make the new small parts one blob to write (none if the store has the same one)."""
        data = b"".join(self.pack)
        self.pack = []
        if not data:
            return
        digest = hash_buffer(data)
        stored = store.has_blob(digest, len(data))
        self.pack_ref.update(stored or records.blob_ref(digest, len(data)))
        if stored is None:
            self.new[digest] = (data, self.pack_ref)
        else:  # a run before this one packed the same values
            self.new_bytes -= len(data)


def _content(manifest: dict[str, Any]) -> tuple[Any, ...]:
    """What a checkpoint holds, by content: each variable's name, type and blob hashes, the aliases,
    what was skipped and why, and a notebook's definitions. Equal for two checkpoints of the same
    state, whatever else their manifests say (time, place)."""
    variables = tuple((v["name"], v["type"], tuple(ref["hash"] for ref in records.variable_refs(v)))
                      for v in manifest["variables"])
    skipped = tuple((s["name"], s["reason"]) for s in manifest["skipped"])
    definitions = tuple(sorted((name, tuple(sorted(d.items()))) for name, d in manifest.get("definitions", {}).items()))
    return variables, tuple(sorted(manifest["aliases"].items())), skipped, definitions


def _parts(variable: dict[str, Any]) -> set[str]:
    return {ref["hash"] for ref in records.variable_refs(variable)}


def _chunks(buffer: memoryview) -> list[memoryview]:
    """A buffer cut in fixed-size chunks: an in-place change or an append leaves the others
    as they were, so they are stored once (docs/store-format.md)."""
    return [buffer[start:start + CHUNK_SIZE] for start in range(0, buffer.nbytes, CHUNK_SIZE)] or [buffer]


class _FixedDigests(serialize.Generations):
    """The chunk hashes of buffers whose memory cannot change while their owner lives (Arrow
    string arrays'), kept for the next checkpoint so that an unchanged one is not hashed again.
    An entry holds the owner, so that memory cannot be freed and reused meanwhile."""

    def known(self, fixed: serialize.Fixed | None) -> list[str] | None:
        """The chunk hashes of a fixed buffer hashed before, else None."""
        entry = None if fixed is None else self.get(fixed[:2])
        return None if entry is None else entry[1]

    def remember(self, fixed: serialize.Fixed | None, digests: list[str]) -> None:
        if fixed is not None:
            self.keep(fixed[:2], (fixed[2], digests))


def drop_changed(manifest: dict[str, Any], changed: set[str]) -> None:
    """Take the variables whose data another thread changed during the write out of `manifest`."""
    kept = []
    for variable in manifest["variables"]:
        if _parts(variable) & changed:
            manifest["skipped"].append({"name": variable["name"], "reason": CHANGED})
        else:
            kept.append(variable)
    manifest["variables"] = kept


class _Job:
    """The rest of one checkpoint, written by a background thread: data that cannot change
    (pickle streams and copies, held in memory within the budget), compressed; then the chunks
    written raw during the pause, compressed from the page cache where that pays; then the
    manifest.

    It owns the shared gc lock until it ends.
    """

    def __init__(self, writer: Writer, lock: FileLock, index: int, manifest: dict[str, Any],
                 held: dict[str, tuple[bytes, dict[str, Any]]], raw: list[dict[str, Any]], new_bytes: int) -> None:
        self.writer = writer
        self.lock = lock
        self.index = index
        self.manifest = manifest
        self.new_bytes = new_bytes
        self.held = held
        self.raw = raw  # references of chunks written raw during the pause, compressed here
        self.error: BaseException | None = None
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.thread_id: int | None = None

    def start(self) -> None:
        _forget_ended_threads()
        _jobs_in_flight.add(self)
        try:
            unseen.start_thread(self._run)
        except BaseException:
            _jobs_in_flight.discard(self)
            self.lock.release()
            self.done.release()
            raise

    def running(self) -> bool:
        return self.done.locked()

    def wait(self) -> None:
        self.done.acquire()
        self.done.release()

    def wait_gone(self) -> None:
        self.wait()
        if self.thread_id is not None:
            wait_gone(self.thread_id)

    def _run(self) -> None:
        self.thread_id = _thread.get_native_id()
        # Signals sent to the process must keep reaching the main thread.
        _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        try:
            try:
                for digest, (data, ref) in self.held.items():
                    stored = self.writer.store.write_compressed(digest, data)
                    assert stored is not None  # no `verify`: it is always written
                    ref.update(stored)
                    self.new_bytes -= ref["size"] - records.stored_size(ref)
                self.held = {}
                for ref in self.raw:
                    self.writer.store.recompress(ref)
                    self.new_bytes -= ref["size"] - records.stored_size(ref)
                self.manifest["new_bytes"] = self.new_bytes
                self.writer.commit(self.index, self.manifest, self.new_bytes)
            finally:
                self.lock.release()
            self.writer.keep_under_cap()
        except BaseException as exc:
            self.error = exc
        finally:
            if self.thread_id is not None:  # before it leaves the jobs: a fork sees one or the other
                _ending_threads.add(self.thread_id)
            _jobs_in_flight.discard(self)
            self.done.release()


_jobs_in_flight: set[_Job] = set()
# the native ids of job threads whose work is done but which may not have ended yet (ids only:
# a finished job keeps nothing of the program's alive)
_ending_threads: set[int] = set()


def _forget_ended_threads() -> None:
    """Wait for the threads of finished jobs to be gone (long since, but for a fork right after)."""
    for native_id in list(_ending_threads):
        wait_gone(native_id)
        _ending_threads.discard(native_id)


def _verify(data: Any, digest: str) -> Callable[[], bool]:
    """Whether the program's memory `data` still holds what hashed to `digest`."""
    return lambda: hash_buffer(data) == digest


def _threads_for(size: int) -> int:
    """How many threads hash or write `size` bytes of chunks: several from PARALLEL_WORK bytes
    (xxhash and writes let go of the GIL: most of a pause for large data), else one."""
    return min(MAX_THREADS, os.cpu_count() or 1) if size >= PARALLEL_WORK else 1


def hash_buffers(buffers: list[Any]) -> list[str]:
    """`hash_buffer` of each of `buffers`, by several threads when they are large."""
    return parallel(hash_buffer, buffers, _threads_for(sum(memoryview(b).nbytes for b in buffers)))


def _before_fork() -> None:
    """Let a checkpoint being written finish before the program forks.

    The child then sees the threads it would see without chkpt (Python warns about forking a
    multi-threaded process), and never inherits a half-written checkpoint.
    """
    for job in list(_jobs_in_flight):
        try:
            job.wait_gone()
        except Exception:
            pass
    _forget_ended_threads()


os.register_at_fork(before=_before_fork)


class RunFacts:
    """What a run records of the process it checkpoints, given by its driver (a script's Session,
    a notebook kernel's): a plain value, so that the writer needs no Session or Watch.

    `script` is the script's path, or the notebook's (`<kernel>` in the kernel's folder when the
    frontend does not tell it); `source` the script's text as it started; `extra` more fields of
    the run record (`resumed_from`, `restored_from`); `keep_all` keeps every checkpoint (a notebook:
    any cell's state may be checked out), else the `keep` setting thins them.
    """

    __slots__ = ("argv", "extra", "keep_all", "kind", "main_thread", "script", "source", "started")

    def __init__(self, *, script: str | None, argv: list[str], started: float, main_thread: int,
                 source: bytes | None = None, kind: str = "script", extra: dict[str, Any] | None = None,
                 keep_all: bool = False) -> None:
        self.script = script
        self.argv = list(argv)
        self.started = started
        self.main_thread = main_thread
        self.source = source
        self.kind = kind
        self.extra = dict(extra or {})
        self.keep_all = keep_all


class Writer:
    """Writes the checkpoints of one run."""

    def __init__(self, config: Config, facts: RunFacts, is_user_file: Callable[[str], bool]) -> None:
        self.facts = facts
        self.config = config
        self.store = Store(self.config.store_dir)
        self.uploader: Uploader | None = None
        if self.config.remote:
            from chkpt.sync import Uploader

            self.uploader = Uploader(self.config.remote, self.config.upload_wait, facts.main_thread)
        self.rules = salience.Rules(self.config, is_user_file=is_user_file)
        self.keep = 0 if facts.keep_all else self.config.keep  # 0: no thinning
        self.run: RunWriter | None = None
        self.run_bytes = 0
        self.problem: str | None = None  # why checkpoints are off, once the store failed
        # hash → reference of the small parts (streams, buffers) the last checkpoint packed
        self._packed: dict[str, dict[str, Any]] = {}
        # kept for the next checkpoint, so that what did not change is not pickled or hashed again
        self._kept = serialize.Kept(self.config.reuse_memory)
        self._digests = _FixedDigests()
        self._job: _Job | None = None
        self._sources: dict[str, dict[str, Any]] = {}  # module file → its source's blob, read once a run
        self._stored: dict[str, dict[str, Any]] = {}  # hash → reference, of the last committed checkpoint's blobs
        self._content: tuple[Any, ...] | None = None  # what the last checkpoint holds (`content`)

    def _open_run(self) -> RunWriter:
        facts = self.facts
        meta = records.new_run(
            script=facts.script,
            script_name=os.path.basename(facts.script or "?"),
            argv=facts.argv,
            cwd=os.getcwd(),
            python=sys.version.split()[0],
            executable=sys.executable,
            pid=os.getpid(),
            host=os.uname().nodename if hasattr(os, "uname") else "",
            started=facts.started,
            **({"kind": facts.kind} if facts.kind != "script" else {}),
            **facts.extra,
        )
        run = self.store.create_run(meta)
        if facts.source is not None:
            ref, written = self.store.put_blob(facts.source)
            self.run_bytes += written
            run.meta["source"] = ref
            run.save_meta()
        return run

    # -- taking a checkpoint ----------------------------------------------------------------------

    def write(
        self, trigger: str, frames: list[FrameType], namespace: dict[str, Any], tracked: dict[str, Any], *,
        label: str = "", exc: BaseException | None = None, position: dict[str, Any] | None = None,
        only_if_changed: bool = False,
    ) -> int | None:
        """Save `namespace` (the globals) and the locals of `frames`; returns the checkpoint index,
        None if nothing was saved (with `only_if_changed`, also when it would hold what the last
        checkpoint holds: then nothing is written).

        `position` adds fields to the manifest (where it was taken). Returns once the data is
        captured; exit/crash/signal checkpoints return once committed.
        """
        if self.problem is not None:
            return None
        # the program is stopped from here: waiting for the last checkpoint's background part is
        # part of its pause, and is recorded so (`pause`, shown by `chkpt show`)
        started = time.time()
        if self._job is not None:
            if trigger == "periodic" and self._job.running():
                return None
            self._wait()
            if self.problem is not None:
                return None
        roots = capture.named_roots(namespace, frames, tracked)
        # where the program died or was stopped (a crash, SIGTERM), and at resume points, the small
        # values (loop counters, flags) are what explains it and what a resume needs; as main()
        # returns, its final locals (a small model or result would otherwise load from an older
        # checkpoint); after a notebook cell, what a new kernel needs to carry on
        keep_small = (trigger in ("crash", "signal", "return") or self.facts.kind == "notebook"
                      or bool(position and position.get("resumable")))
        captured = capture.collect(roots, self.rules, keep_small=keep_small)
        # a run that saved nothing leaves no run, unless it died: that is listed, data or not
        if not captured.items and not captured.skipped and self.run is None \
                and not (position and position.get("definitions")) and trigger not in ("crash", "signal"):
            return None
        lock = self.store.lock(exclusive=False, blocking=trigger != "periodic")
        try:
            if self.run is None:
                self.store.create()
            if not lock.acquire():
                return None  # a gc is running; the next periodic checkpoint will do
        except (OSError, StoreError) as error:
            self._stop(error)
            return None
        handed_over = False
        try:
            if self.run is None:
                self.run = self._open_run()
            self.run.keep_locked()
            plan = self._plan(captured)
            manifest = self._manifest(trigger, frames, label, exc, started, captured, plan)
            manifest.update(position or {})
            sources = self._module_sources(manifest.get("stack", []))
            if sources:
                manifest["sources"] = sources
            content = _content(manifest)
            if only_if_changed and content == self._content and not plan.new:
                return None
            self._content = content
            index = self.run.reserve_index()
            final = trigger in records.FINAL_TRIGGERS
            # a SIGTERM's checkpoint races the scheduler's SIGKILL: its chunks are written raw,
            # at page-cache speed, where compressing them would make the pause several times longer
            held, raw = self._write_program_memory(plan, manifest, 0 if final else self.config.memory_budget,
                                                   compress=trigger != "signal")
            manifest["new_bytes"] = plan.new_bytes
            manifest["pause"] = time.time() - started
            if not held and not raw:
                self.commit(index, manifest, plan.new_bytes)
            else:
                job = self._job = _Job(self, lock, index, manifest, held, raw, plan.new_bytes)
                handed_over = True
                job.start()
            return index
        except (OSError, StoreError) as error:
            self._stop(error)
            return None
        finally:
            if not handed_over:
                lock.release()

    def _module_sources(self, stack: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The stored source of each user module file with a frame on `stack` (what resume lines
        an edited module function up with), each file read and stored once a run."""
        for file in {entry["file"] for entry in stack if "file" in entry} - self._sources.keys():
            try:
                with open(file, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue  # gone or unreadable: resume runs its functions again from their start
            self._sources[file], written = self.store.put_blob(data)
            self.run_bytes += written
        return {entry["file"]: self._sources[entry["file"]] for entry in stack if entry.get("file") in self._sources}

    def _write_program_memory(self, plan: _Plan, manifest: dict[str, Any], budget: int, compress: bool = True
                              ) -> tuple[dict[str, tuple[bytes, dict[str, Any]]], list[dict[str, Any]]]:
        """Copy, during the pause, the new chunks of the program's memory within `budget`, and
        write the rest straight to the store; return what is held (copies and pickle streams,
        which cannot change) for the background thread to compress and write, and the
        references of the chunks written raw, which it compresses from the page cache.

        So every checkpoint holds each value as it was at its safe point, and its memory is
        bounded by the budget: past it, chunks are written from the program's memory (page-cache
        speed, no copy), uncompressed, to be compressed after the pause. Without a budget (an
        exit or crash checkpoint: there is no after) each chunk that compresses well (a sample
        tells) is compressed by the writing threads, the others are written raw; without
        `compress` (a signal's checkpoint, which must be done before the SIGKILL) all are raw.
        Chunks of memory that cannot change (Arrow string buffers, the pickles kept for the
        next checkpoint) are held as they are, beside the budget: holding them costs no memory.
        Buffers of objects that can change size (a bytearray) are copied first: holding their
        buffer while another thread of the program resizes them would make that resize fail.
        """
        held: dict[str, tuple[bytes, dict[str, Any]]] = {}
        held_bytes = 0
        changed: set[str] = set()
        direct: list[tuple[str, Any, bool]] = []  # written now: (hash, data, whether program memory)
        refs: list[dict[str, Any]] = []
        for digest, (data, ref) in plan.new.items():
            size = ref["size"]
            if budget and digest in plan.fixed:  # held as it is (its owner is, for the next checkpoint)
                held[digest] = (data, ref)
                continue
            program_memory = not isinstance(data, bytes)
            if program_memory and type(memoryview(data).obj).__module__.split(".")[0] != "numpy":
                data = bytes(data)
            if budget and held_bytes + size <= budget:
                if not isinstance(data, bytes):
                    data = bytes(data)
                if program_memory and hash_buffer(data) != digest:  # another thread wrote to it
                    changed.add(digest)
                    plan.new_bytes -= size
                    continue
                held[digest] = (data, ref)
                held_bytes += size
                continue
            direct.append((digest, data, program_memory))
            refs.append(ref)
        write = self._write_compressed if compress and not budget else self._write_raw
        written = parallel(write, direct, _threads_for(sum(memoryview(data).nbytes for _, data, _ in direct)))
        raw = []
        for (digest, data, _), ref, stored in zip(direct, refs, written, strict=True):
            if stored is None:
                changed.add(digest)
                plan.new_bytes -= memoryview(data).nbytes
                continue
            ref.update(stored)
            plan.new_bytes -= ref["size"] - records.stored_size(ref)
            if budget:
                raw.append(ref)
        if changed:
            drop_changed(manifest, changed)
        plan.new.clear()  # let go of the program's memory
        return held, raw

    def _write_raw(self, part: tuple[str, Any, bool]) -> dict[str, Any] | None:
        """Write one chunk raw during the pause; its reference, None when it is the program's
        memory and another thread of the program changed it meanwhile (hashed again before it
        is renamed into place)."""
        digest, data, program_memory = part
        written = self.store.write_blob(digest, [data], verify=_verify(data, digest) if program_memory else None)
        return records.blob_ref(digest, memoryview(data).nbytes) if written else None

    def _write_compressed(self, part: tuple[str, Any, bool]) -> dict[str, Any] | None:
        """`_write_raw`, compressed where that pays even during a pause (Store.write_compressed)."""
        digest, data, program_memory = part
        return self.store.write_compressed(digest, data, _verify(data, digest) if program_memory else None,
                                           during_pause=True)

    def commit(self, index: int, manifest: dict[str, Any], new_bytes: int) -> None:
        """Make a checkpoint whose blobs are all written visible (under the shared gc lock)."""
        assert self.run is not None
        manifest["duration"] = time.time() - manifest["time"]
        self.run.add_checkpoint(manifest, index)
        # what this checkpoint refers to stays stored while it is the run's latest (thinning
        # keeps the latest, gc and eviction keep what a live run's checkpoints refer to)
        self._stored = {ref["hash"]: ref for variable in manifest["variables"]
                        for ref in records.variable_refs(variable) if "pack" not in ref}
        if new_bytes:
            self.store.add_usage(new_bytes)
        self.run.thin(self.keep)
        # the heartbeat and summary in run.json: a killed run's duration, listing without manifests
        self.run.save_summary(dict(manifest, index=index))
        if self.uploader is not None and manifest["trigger"] not in records.FINAL_TRIGGERS:
            self.uploader.committed()

    def writing(self) -> bool:
        """Whether the background part of the last checkpoint is still being written."""
        return self._job is not None and self._job.running()

    def wait_idle(self) -> None:
        """Wait for the background part of the last checkpoint, and for its thread to be gone."""
        job = self._job
        if job is not None:
            job.wait_gone()
            self._wait()

    def keep_under_cap(self) -> None:
        """Evict other runs if the store is over its cap; best effort, never waits for a gc.

        A failure here is not the run's problem: `chkpt gc` reports what it cannot remove.
        """
        try:
            cleanup.enforce_cap(self.store, self.config.max_store_size, blocking=False)
        except (OSError, StoreError):
            pass

    def _wait(self) -> None:
        """Wait for the background checkpoint; a store failure there turns checkpoints off."""
        job = self._job
        if job is None:
            return
        job.wait()
        self._job = None
        if isinstance(job.error, OSError | StoreError):
            self._stop(job.error)
        elif job.error is not None:
            raise job.error

    def _stop(self, error: BaseException) -> None:
        """One warning, then no more checkpoints: the store cannot be written. What the failed
        checkpoint wrote goes (a full disk gets its space back for the program)."""
        self._forget()
        try:
            self.store.undo_written()
        except OSError:
            pass
        if isinstance(error, StoreError):  # its message names the store and the reason
            self.problem = f"cannot write checkpoints: {error}"
        else:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            self.problem = f"cannot write checkpoints to {self.store.location} ({reason})"
        guard.warn(f"{self.problem}; chkpt is off for this run, your script is not affected")

    def _forget(self) -> None:
        self._kept.clear()
        self._digests.clear()

    def _manifest(
        self, trigger: str, frames: list[FrameType], label: str, exc: BaseException | None,
        started: float, captured: capture.Capture, plan: _Plan,
    ) -> dict[str, Any]:
        where = frames[0] if frames else None
        return {
            "trigger": trigger,
            "label": label,
            "time": started,
            "file": where.f_code.co_filename if where else self.facts.script,
            "line": where.f_lineno if where else None,
            "function": where.f_code.co_name if where else None,
            "exception": plain.exception_text(exc) if exc is not None else None,
            "variables": plan.variables,
            "aliases": captured.aliases,
            "skipped": captured.skipped,
        }

    def _plan(self, captured: capture.Capture) -> _Plan:
        """Serialize and hash every value; keep those whose new data fits the limits.

        Buffers are cut in chunks, each a blob; small pickle streams and buffers are copied into
        one pack blob for the checkpoint, and one that the previous checkpoint packed is referred
        to there.
        """
        config = self.config
        present: dict[str, dict[str, Any] | None] = {}  # hash → the stored blob's reference
        plan = _Plan()
        self._kept.next_checkpoint()
        self._digests.next_checkpoint()

        def reusable(digest: str) -> dict[str, Any] | None:
            """The reference to a small part the previous checkpoint packed, if its pack is there."""
            ref = self._packed.get(digest)
            if ref is not None and ref["pack"]["hash"] not in present:
                present[ref["pack"]["hash"]] = self.store.has_blob(ref["pack"]["hash"], ref["pack"]["size"])
            return ref if ref is not None and present[ref["pack"]["hash"]] else None

        def new_parts(parts: list[tuple[str, Any, int, bool]]) -> list[tuple[str, Any, int, bool]]:
            fresh = []
            seen: set[str] = set()  # a value's equal chunks (runs of zeros) are new only once
            for digest, data, size, small in parts:
                if digest in plan.new or digest in plan.packed or digest in seen:
                    continue
                if small:
                    if reusable(digest) is None:
                        fresh.append((digest, data, size, small))
                        seen.add(digest)
                    continue
                if digest not in present:
                    present[digest] = self._stored.get(digest) or self.store.has_blob(digest, size)
                if present[digest] is None:
                    fresh.append((digest, data, size, small))
                    seen.add(digest)
            return fresh

        def ref(digest: str, small: bool) -> dict[str, Any]:
            if small:
                found = plan.packed.get(digest) or reusable(digest)
                assert found is not None
                plan.packed[digest] = found
                return found
            return present[digest] or plan.new[digest][1]

        serialized = []
        for item in captured.items:
            try:
                data = serialize.dumps(item.obj, self._kept, self.rules.pickling)
            except Exception as exc:
                captured.skip(item.name, f"cannot be pickled ({plain.exception_text(exc)})")
                continue
            chunked = [_chunks(buffer) for buffer in data.buffers]
            serialized.append((item, data, chunked, [self._digests.known(fixed) for fixed in data.fixed]))
        # every chunk not known unchanged, hashed at once: most of the pause for large data
        pending = [chunk for _, _, chunked, known in serialized
                   for chunks, digests in zip(chunked, known, strict=True) if digests is None for chunk in chunks]
        hashed = iter(hash_buffers(pending))
        planned = []
        for item, data, chunked, known in serialized:
            digests = [hash_buffer(data.stream)]
            for chunks, fixed, chunk_digests in zip(chunked, data.fixed, known, strict=True):
                if chunk_digests is None:
                    chunk_digests = [next(hashed) for _ in chunks]
                    self._digests.remember(fixed, chunk_digests)
                digests += chunk_digests
                if fixed is not None:
                    plan.fixed.update(chunk_digests)
            parts = [(digest, p, memoryview(p).nbytes, memoryview(p).nbytes <= PACK_LIMIT) for digest, p
                     in zip(digests, (data.stream, *(chunk for chunks in chunked for chunk in chunks)), strict=True)]
            planned.append((item, data, parts, chunked))
        # the chunks the store may have, looked up (and read back the first time) by several threads
        lookups = {digest: size for _, _, parts, _ in planned for digest, _, size, small in parts
                   if not small and digest not in self._stored}
        present.update(self.store.find_blobs(lookups, _threads_for(sum(lookups.values()))))
        entries = [(sum(part[2] for part in new_parts(parts)), item, data, parts, chunked)
                   for item, data, parts, chunked in planned]
        entries.sort(key=lambda entry: entry[0])  # least new data first: the largest are dropped
        for _, item, data, parts, chunked in entries:
            fresh = new_parts(parts)
            size = sum(part[2] for part in fresh)
            if size and plan.new_bytes + size > config.max_checkpoint_size:
                captured.skip(item.name, f"{human_size(size)} of new data did not fit in "
                                         f"max_checkpoint_size ({human_size(config.max_checkpoint_size)})")
                continue
            if size and self.run_bytes + plan.new_bytes + size > config.max_run_size:
                captured.skip(item.name, f"the run reached max_run_size "
                                         f"({human_size(config.max_run_size)})")
                continue
            if not all(plan.add_to_pack(digest, part) for digest, part, _, small in fresh if small):
                captured.skip(item.name, CHANGED)
                continue
            plan.new.update((digest, (part, records.blob_ref(digest, part_size)))
                            for digest, part, part_size, small in fresh if not small)
            plan.new_bytes += size
            refs = iter([ref(digest, small) for digest, _, _, small in parts])
            plan.variables.append({
                "name": item.name,
                "type": item.type,
                "scope": item.scope,
                "size": data.size,
                **item.info,
                "pickle": next(refs),
                "buffers": [{"size": buffer.nbytes, "chunks": [next(refs) for _ in chunks]}
                            for buffer, chunks in zip(data.buffers, chunked, strict=True)],
            })
        plan.close_pack(self.store)
        plan.variables.sort(key=lambda v: v["name"])
        self._packed = plan.packed  # what the next checkpoint may refer to
        self.run_bytes += plan.new_bytes
        return plan

    # -- the end of the run -----------------------------------------------------------------------

    def finish(self, status: str, *, exc: BaseException | None, exit_status: object) -> None:
        """Record how the run ended, thin its checkpoints and keep the store under its cap."""
        self._wait()
        self._forget()  # no reference to the program's objects past the final checkpoint
        if self.run is None:
            return
        run = self.run
        interrupted = issubclass(type(exc), KeyboardInterrupt)  # Ctrl-C: stopped, not crashed
        run.meta.update(status="interrupted" if interrupted else status, ended=time.time())
        if exc is not None:
            run.meta["exception"] = plain.exception_text(exc)
            run.meta["exit_code"] = None if interrupted else 1  # interrupted: dies of SIGINT
        elif status == "killed":
            run.meta["exit_code"] = None
        else:
            run.meta["exit_code"] = _exit_code(exit_status)
        if self.problem is not None:
            run.meta["problem"] = self.problem
        try:
            try:
                run.thin(self.keep)
            finally:
                run.save_summary()  # the end is recorded even if thinning failed
        except (OSError, StoreError) as error:
            if self.problem is None:
                self._stop(error)
        else:
            if self.run_bytes:
                self.keep_under_cap()  # while this run is still live, so it is never evicted
        finally:
            run.close()
        if self.uploader is not None:
            problem = self.uploader.finish()
            if problem:
                guard.warn(problem)


def _exit_code(status: object) -> int:
    """The process exit code Python derives from a sys.exit() argument."""
    if status is None:
        return 0
    if issubclass(type(status), int):  # not isinstance: it would ask a program's object its __class__
        return int.__index__(status)
    return 1
