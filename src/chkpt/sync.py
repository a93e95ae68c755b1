"""This machine's side of a shared store in a bucket: its staging store, what it has uploaded, the uploader.

Checkpoints are written to an ordinary local store (the *staging* store, crash-safe as ever)
and copied to the bucket by an uploader process, file by file, whatever the store's layout:
data files first (content-addressed, immutable: uploaded only if absent), then the runs'
manifests, then each run's index object (its run record), so a checkpoint is listed only
once everything it refers to is there. Reading the bucket is shared.py's job.
docs/store-format.md ("Shared store") has the layout, the leases and gc's rules.
"""

from __future__ import annotations

import _thread
import math
import os
import sys
import time

from chkpt import paths, records
from chkpt.store import FileLock, Store, StoreError, layout
from chkpt.store.local import LocalBackend
from chkpt.store.locks import is_held
from chkpt.store.objects import ObjectBackend
from chkpt.store.threads import parallel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from chkpt.store.backend import Entry

GRACE = 24 * 3600  # gc never deletes a data object younger than this
FRESH = GRACE / 4  # data this machine saw in the bucket more recently than this is not checked again
WORKERS = 8
CONFIRMED = "uploaded"  # "<unix time> <key>" per file this machine uploaded or saw in the bucket
SYNCED = "synced"  # synced/<run>: "<size> <mtime_ns> live|ended" of run.json as last uploaded
UPLOAD_LOCK = "upload.lock"  # flock'ed by the one uploader of this machine (it holds its pid)


class Local:
    """This machine's files for one bucket store: staging store, read cache, upload state."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.home = LocalBackend(paths.remote_home(self.url))
        self.staging = Store(self.home.path("staging"))
        self.cache = LocalBackend(self.home.path("cache"))

    def upload_lock(self, wait: float = 0.0) -> FileLock:
        """The lock of this machine's one uploader to the bucket (tried for up to `wait` seconds)."""
        return FileLock(self.home.path(UPLOAD_LOCK), exclusive=True, blocking=False, wait=wait)

    def uploading(self) -> bool:
        """Whether an uploader of this machine is at work."""
        return is_held(self.home.path(UPLOAD_LOCK))

    def make(self) -> None:
        os.makedirs(os.path.dirname(self.home.root), mode=0o700, exist_ok=True)
        self.home.make_folder(SYNCED)

    # -- what has been uploaded ---------------------------------------------------------------------

    def confirmed(self) -> dict[str, float]:
        """key → when this machine last saw it in the bucket (or uploaded it)."""
        found: dict[str, float] = {}
        try:
            lines = self.home.get(CONFIRMED).decode("utf-8", "replace").splitlines()
        except (OSError, StoreError):
            return found
        for line in lines:
            when, _, key = line.partition(" ")
            try:
                seen = float(when)
            except ValueError:
                continue
            if math.isfinite(seen):
                found[key] = seen
        if len(lines) > 2 * len(found) + 1000:  # mostly repeats: rewrite it with one line a key
            self.home.put_atomic(CONFIRMED, ["".join(f"{when:.0f} {key}\n" for key, when in found.items()).encode()])
        return found

    def confirm(self, keys: Iterable[str]) -> None:
        text = "".join(f"{time.time():.0f} {key}\n" for key in keys)
        if text:
            self.home.append(CONFIRMED, text.encode())

    def record_state(self, run_id: str) -> str | None:
        """What the staging store's record of a run is now: its size and mtime."""
        try:
            info = os.lstat(self.staging.path(layout.run_record(run_id)))
        except OSError:
            return None
        return f"{info.st_size} {info.st_mtime_ns}"

    def pending(self) -> list[str]:
        """The staging store's runs whose record changed since its last upload, and those uploaded
        live whose writer has gone since (their record goes up again, as killed)."""
        try:
            run_ids = self.staging.run_ids()
        except (OSError, StoreError):
            return []
        waiting = []
        for run_id in run_ids:
            state = self.record_state(run_id)
            if state is None:
                continue
            try:
                marker = self.home.get(layout.join(SYNCED, run_id)).decode("utf-8", "replace")
            except (OSError, StoreError):
                marker = ""
            if marker == f"{state} ended" or (marker == f"{state} live" and self.staging.is_live(run_id)):
                continue
            waiting.append(run_id)
        return waiting

    def mark_synced(self, run_id: str, state: str, live: bool) -> None:
        self.home.put_atomic(layout.join(SYNCED, run_id), [f"{state} {'live' if live else 'ended'}".encode()])


# -- uploading ----------------------------------------------------------------------------------------

class Unfinished(StoreError):
    """An upload stopped at its deadline; what it did not upload is still pending."""


class _Snapshot:
    """What one run of the staging store holds now: its record and manifests (read before any data
    is listed, so every data file they refer to is on disk by then)."""

    def __init__(self, local: Local, run_id: str) -> None:
        self.run_id = run_id
        self.state = local.record_state(run_id)
        staging = local.staging
        key = layout.run_record(run_id)
        with staging.backend.open(key) as opened:
            self.record = opened.read()
            self.record_mtime = os.fstat(opened.descriptor.check()).st_mtime
        self.live = staging.is_live(run_id)
        if not self.live:
            # a writer that died "running" (SIGKILL): say so in the bucket, where no lock tells it
            try:
                meta = records.decode_run(self.record)
            except ValueError:
                meta = None
            if meta is not None and meta["status"] == "running":
                meta["status"] = "killed"
                self.record = records.encode(meta)
        self.manifests: list[tuple[str, float]] = [  # (key, mtime)
            (layout.manifest(run_id, index), mtime) for index, mtime in staging.checkpoint_mtimes(run_id).items()]


def _upload_data(bucket: ObjectBackend, local: Local, confirmed: dict[str, float], deadline: float) -> None:
    """Every data file the bucket may lack: absent ones uploaded, old ones rewritten (gc's grace)."""
    now = time.time()
    todo = [entry for entry in local.staging.data_files() if now - confirmed.get(entry.key, 0) > FRESH]

    def upload(entry: Entry) -> str | None:
        if time.monotonic() > deadline:
            raise Unfinished(f"{bucket.url}: the upload did not finish in time")
        path = local.staging.path(entry.key)
        try:
            created = bucket.upload(entry.key, path, create=True, mtime=entry.mtime)
        except FileNotFoundError:
            if os.path.lexists(path):
                raise
            # gone since the listing: a raw chunk the checkpoint being written replaced by its
            # compressed blob (which the next pass uploads), or data a failed checkpoint removed
            return None
        if not created:
            there = bucket.stat(entry.key)
            # an object about to reach gc's grace is rewritten: gc deletes only old unreferenced data
            if there is None or time.time() - there.mtime > FRESH:
                bucket.upload(entry.key, path, mtime=entry.mtime)
        return entry.key

    for start in range(0, len(todo), 64):  # confirmed in batches: a killed upload keeps its progress
        local.confirm([key for key in parallel(upload, todo[start:start + 64], WORKERS) if key is not None])


def upload_pass(bucket: ObjectBackend, local: Local, deadline: float) -> list[str]:
    """Upload the runs whose record changed; returns their ids. Order: data, manifests, index."""
    run_ids = local.pending()
    if not run_ids:
        return []
    snapshots = []
    for run_id in run_ids:
        try:
            snapshots.append(_Snapshot(local, run_id))
        except (OSError, StoreError):
            continue  # deleted meanwhile, or damaged: nothing to upload
    confirmed = local.confirmed()
    _upload_data(bucket, local, confirmed, deadline)

    def upload_manifest(item: tuple[str, float]) -> str:
        key, mtime = item
        bucket.upload(key, local.staging.path(key), create=True, mtime=mtime)  # immutable: already there is as good
        return key

    manifests = [m for s in snapshots for m in s.manifests if m[0] not in confirmed]
    local.confirm(parallel(upload_manifest, manifests, WORKERS))

    def upload_index(snapshot: _Snapshot) -> str:
        bucket.upload_bytes(layout.index_object(snapshot.run_id), snapshot.record, mtime=snapshot.record_mtime)
        if snapshot.state is not None:
            local.mark_synced(snapshot.run_id, snapshot.state, snapshot.live)
        return snapshot.run_id

    return parallel(upload_index, snapshots, WORKERS)


def upload(url: str, *, timeout: float = 3600.0, wait: float = 0.0) -> list[str]:
    """Upload every run of this machine's staging store that the bucket lacks. One uploader at a
    time per machine and bucket: while another is at it, wait up to `wait` seconds for it to end
    (then return [] if it has not; it uploads what is pending before it ends)."""
    local = Local(url)
    local.make()
    bucket = ObjectBackend(url)
    deadline = time.monotonic() + timeout
    uploaded: list[str] = []
    while True:
        lock = local.upload_lock(wait)
        if not lock.acquire():
            return uploaded
        try:
            lock.write_owner()
            while time.monotonic() < deadline:
                done = upload_pass(bucket, local, deadline)
                if not done:
                    break
                uploaded.extend(r for r in done if r not in uploaded)
        finally:
            lock.release()
        # a commit between our last look and the release found the lock held: look once more
        if not local.pending() or time.monotonic() >= deadline:
            return uploaded


# -- the background uploader of a traced run ------------------------------------------------------------

_launching: set[Any] = set()  # locks held by launcher threads until they end


def _before_fork() -> None:
    """A fork waits for the launches in flight: the child sees the threads it would without chkpt."""
    for done in list(_launching):
        done.acquire()
        done.release()


os.register_at_fork(before=_before_fork)

_LAUNCH = ("import os,sys\n"
           "if os.fork()==0:\n"
           " os.setsid(); os.execv(sys.executable,[sys.executable,*sys.argv[1:]])\n")


class Uploader:
    """Starts the uploader process of a traced run after its commits, and waits for it at its end.

    The upload runs in a process of its own (`python -m chkpt sync`), detached from the
    program's (not its child, so no `os.wait()` of the program sees it): the program keeps
    its threads, its GIL and its pause, and a run killed mid-upload is finished by the next.
    """

    def __init__(self, url: str, wait: float, main_thread: int) -> None:
        self.url = url
        self.wait = wait
        self.main_thread = main_thread
        self.local = Local(url)

    def _start(self, report: bool) -> int | None:
        """Launch `chkpt sync` for the bucket; with `report`, the read end of a pipe it writes its
        problem to (EOF once it is done)."""
        import subprocess

        if not report:
            self.local.make()
            if self.local.uploading():
                return None  # an uploader is running: it looks for new commits before it stops
        read_end, write_end = os.pipe()
        env = dict(os.environ, CHKPT="0")
        try:
            subprocess.run([sys.executable, "-S", "-c", _LAUNCH, "-m", "chkpt", "sync", self.url,
                            "--report-fd", str(write_end)], env=env, pass_fds=(write_end,),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False)
        finally:
            os.close(write_end)
        if not report:
            os.close(read_end)
            return None
        return read_end

    def committed(self) -> None:
        """A checkpoint was committed: have it uploaded (best effort). From the main thread the
        process is launched by a bare thread, so that the program's pause does not include it."""
        done = _thread.allocate_lock()
        done.acquire()

        def launch() -> None:
            try:
                self._start(report=False)
            except Exception:
                pass
            finally:
                _launching.discard(done)
                done.release()

        _launching.add(done)
        if _thread.get_ident() != self.main_thread:
            launch()  # already off the program's main thread (a background commit)
            return
        try:
            _thread.start_new_thread(launch, ())
        except RuntimeError:  # interpreter shutdown: the run's end uploads it
            _launching.discard(done)

    def finish(self) -> str | None:
        """The run ended: upload what is left, waiting up to `wait` seconds; the problem, if any."""
        import select

        if self.wait <= 0:  # upload_wait = 0: left to the background, as the user asked
            try:
                self._start(report=False)
            except OSError:
                pass
            return None
        try:
            read_end = self._start(report=True)
        except OSError as exc:
            return f"could not start the upload to {self.url} ({exc.strerror or exc})"
        assert read_end is not None
        message = b""
        deadline = time.monotonic() + self.wait
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([read_end], [], [], left)[0]:
                    return (f"the upload to {self.url} goes on in the background after {self.wait:g}s "
                            "(`chkpt sync` finishes it)")
                chunk = os.read(read_end, 4096)
                if not chunk:
                    break
                message += chunk
        finally:
            os.close(read_end)
        text = message.decode("utf-8", "replace").strip()
        return text or None


def kept_locally(problem: str, url: str) -> str:
    return f"{problem}; the run is kept in {Local(url).staging.location} and `chkpt sync` uploads it later"
