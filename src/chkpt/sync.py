"""This machine's side of a shared store in a bucket: its staging store, what it has uploaded, the uploader.

Checkpoints are written to an ordinary local store (the *staging* store, crash-safe as ever)
and copied to the bucket by an uploader process, file by file, whatever the store's layout:
data files first (content-addressed, immutable: uploaded only if absent), then the runs'
manifests, then each run's index object `index/<run>.json` (its run record), so a checkpoint
is listed only once everything it refers to is there. Reading the bucket is shared.py's job.
docs/store-format.md ("Shared store") has the layout, the leases and gc's rules.
"""

from __future__ import annotations

import _thread
import fcntl
import json
import os
import secrets
import sys
import time

from chkpt import paths, records
from chkpt.remote import Remote, RemoteError
from chkpt.store import Store, StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

GRACE = 24 * 3600  # gc never deletes a data object younger than this
FRESH = GRACE / 4  # data this machine saw in the bucket more recently than this is not checked again
WORKERS = 8
NOT_DATA = ("runs", "tmp")  # top-level entries of a store that hold no content-addressed data


def rel_key(parts: Iterable[str]) -> str:
    return "/".join(parts)


def valid_run_id(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def parallel(function: Callable[[Any], Any], items: list[Any], workers: int = WORKERS) -> list[Any]:
    """`function` over `items` on a few bare threads; the first exception is raised after all end."""
    if len(items) <= 1:
        return [function(item) for item in items]
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    guard = _thread.allocate_lock()
    next_item = [0]
    count = min(workers, len(items))
    done = [_thread.allocate_lock() for _ in range(count)]

    def work(finished: Any) -> None:
        try:
            while not errors:
                with guard:
                    index = next_item[0]
                    next_item[0] += 1
                if index >= len(items):
                    return
                try:
                    results[index] = function(items[index])
                except BaseException as exc:
                    errors.append(exc)
        finally:
            finished.release()

    for lock in done:
        lock.acquire()
        _thread.start_new_thread(work, (lock,))
    for lock in done:
        lock.acquire()
    if errors:
        raise errors[0]
    return results


def data_files(root: str) -> list[tuple[str, str, int, float]]:
    """(key, path, size, mtime) of every data file of a local store: everything but runs/, tmp/
    and its top-level bookkeeping files (whatever the layout of the data is)."""
    found = []
    try:
        top = os.listdir(root)
    except OSError:
        return found
    for name in top:
        start = os.path.join(root, name)
        if name in NOT_DATA or not os.path.isdir(start) or os.path.islink(start):
            continue
        for directory, subdirs, files in os.walk(start):
            subdirs[:] = [d for d in subdirs if not os.path.islink(os.path.join(directory, d))]
            for file in files:
                path = os.path.join(directory, file)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if os.path.isfile(path) and not os.path.islink(path):
                    key = rel_key(os.path.relpath(path, root).split(os.sep))
                    found.append((key, path, info.st_size, info.st_mtime))
    return found


def manifest_key(run_id: str, index: int) -> str:
    return f"runs/{run_id}/checkpoints/{index:06d}.json"


def index_key(run_id: str) -> str:
    return f"index/{run_id}.json"


class _FileLock:
    """An flock'ed file of this machine's state for the bucket (non-blocking)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock (trying for up to `wait` seconds) and write our pid in it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who is uploading, for people and tests
        self.fd = fd
        return True

    def busy(self) -> bool:
        """Whether another process holds the lock."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Local:
    """This machine's files for one bucket store: staging store, read cache, upload state."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.home = paths.remote_home(self.url)
        self.staging = Store(os.path.join(self.home, "staging"))
        self.cache_root = os.path.join(self.home, "cache")
        self._confirmed_log = os.path.join(self.home, "uploaded")
        self._synced_dir = os.path.join(self.home, "synced")
        self._cache_index = os.path.join(self.home, "cache-index.json")
        self.upload_lock = _FileLock(os.path.join(self.home, "upload.lock"))

    def make(self) -> None:
        for directory in (self.home, self._synced_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)

    # -- what has been uploaded ---------------------------------------------------------------------

    def confirmed(self) -> dict[str, float]:
        """key → when this machine last saw it in the bucket (or uploaded it)."""
        found: dict[str, float] = {}
        lines = 0
        try:
            with open(self._confirmed_log, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    lines += 1
                    when, _, key = line.rstrip("\n").partition(" ")
                    try:
                        found[key] = float(when)
                    except ValueError:
                        continue
        except OSError:
            pass
        if lines > 2 * len(found) + 1000:  # mostly repeats: rewrite it with one line a key
            tmp = f"{self._confirmed_log}.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(f"{when:.0f} {key}\n" for key, when in found.items())
            os.replace(tmp, self._confirmed_log)
        return found

    def confirm(self, keys: Iterable[str]) -> None:
        text = "".join(f"{time.time():.0f} {key}\n" for key in keys)
        if text:
            fd = os.open(self._confirmed_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)

    def _record_state(self, run_id: str) -> str | None:
        try:
            info = os.lstat(os.path.join(self.staging.run_dir(run_id), "run.json"))
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
            state = self._record_state(run_id)
            if state is None:
                continue
            try:
                with open(os.path.join(self._synced_dir, run_id), encoding="utf-8") as handle:
                    marker = handle.read()
            except OSError:
                marker = ""
            if marker == f"{state} ended" or (marker == f"{state} live" and self.staging.is_live(run_id)):
                continue
            waiting.append(run_id)
        return waiting

    def mark_synced(self, run_id: str, state: str, live: bool) -> None:
        tmp = os.path.join(self._synced_dir, f".{run_id}.{secrets.token_hex(4)}")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(f"{state} {'live' if live else 'ended'}")
        os.replace(tmp, os.path.join(self._synced_dir, run_id))

    # -- the read cache's index -----------------------------------------------------------------------

    def cached_runs(self) -> dict[str, tuple[str, list[int]]]:
        """run → (ETag of its index object, its checkpoint indexes) as the read cache last saw them."""
        try:
            with open(self._cache_index, encoding="utf-8") as handle:
                found = json.load(handle)
            return {k: (v[0], [int(i) for i in v[1]]) for k, v in found.items()
                    if isinstance(k, str) and isinstance(v[0], str) and isinstance(v[1], list)}
        except (OSError, ValueError, AttributeError, TypeError, KeyError, IndexError):
            return {}

    def save_cached_runs(self, runs: dict[str, tuple[str, list[int]]]) -> None:
        tmp = f"{self._cache_index}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(runs, handle)
        os.replace(tmp, self._cache_index)


# -- uploading ----------------------------------------------------------------------------------------

class Unfinished(RemoteError):
    """An upload stopped at its deadline; what it did not upload is still pending."""


class _Snapshot:
    """What one run of the staging store holds now: its record and manifests (read before any data
    is listed, so every data file they refer to is on disk by then)."""

    def __init__(self, local: Local, run_id: str) -> None:
        self.run_id = run_id
        self.state = local._record_state(run_id)
        directory = local.staging.run_dir(run_id)
        with open(os.path.join(directory, "run.json"), "rb") as handle:
            self.record = handle.read()
            self.record_mtime = os.fstat(handle.fileno()).st_mtime
        self.live = local.staging.is_live(run_id)
        if not self.live:
            # a writer that died "running" (SIGKILL): say so in the bucket, where no lock tells it
            try:
                meta = records.decode_run(self.record)
            except ValueError:
                meta = None
            if meta is not None and meta["status"] == "running":
                meta["status"] = "killed"
                self.record = records.encode(meta)
        self.manifests: list[tuple[str, str, float]] = []  # (key, path, mtime)
        for index, mtime in local.staging.checkpoint_mtimes(run_id).items():
            self.manifests.append((manifest_key(run_id, index), local.staging.checkpoint_path(run_id, index), mtime))


def _upload_data(remote: Remote, local: Local, confirmed: dict[str, float], deadline: float) -> None:
    """Every data file the bucket may lack: absent ones uploaded, old ones rewritten (gc's grace)."""
    now = time.time()
    todo = [f for f in data_files(local.staging.root) if now - confirmed.get(f[0], 0) > FRESH]

    def upload(item: tuple[str, str, int, float]) -> str:
        key, path, _size, mtime = item
        if time.monotonic() > deadline:
            raise Unfinished(f"{remote.url}: the upload did not finish in time")
        if not remote.put(key, path, create=True, mtime=mtime):
            there = remote.head(key)
            # an object about to reach gc's grace is rewritten: gc deletes only old unreferenced data
            if there is None or time.time() - there.modified > FRESH:
                remote.put(key, path, mtime=mtime)
        return key

    for start in range(0, len(todo), 64):  # confirmed in batches: a killed upload keeps its progress
        local.confirm(parallel(upload, todo[start:start + 64]))


def upload_pass(remote: Remote, local: Local, deadline: float) -> list[str]:
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
    _upload_data(remote, local, confirmed, deadline)

    def upload_manifest(item: tuple[str, str, float]) -> str:
        key, path, mtime = item
        remote.put(key, path, create=True, mtime=mtime)  # immutable: already there is as good
        return key

    manifests = [m for s in snapshots for m in s.manifests if m[0] not in confirmed]
    local.confirm(parallel(upload_manifest, manifests))

    def upload_index(snapshot: _Snapshot) -> str:
        remote.put(index_key(snapshot.run_id), snapshot.record, mtime=snapshot.record_mtime)
        if snapshot.state is not None:
            local.mark_synced(snapshot.run_id, snapshot.state, snapshot.live)
        return snapshot.run_id

    return parallel(upload_index, snapshots)


def upload(url: str, *, timeout: float = 3600.0, wait: float = 0.0) -> list[str]:
    """Upload every run of this machine's staging store that the bucket lacks. One uploader at a
    time per machine and bucket: while another is at it, wait up to `wait` seconds for it to end
    (then return [] if it has not; it uploads what is pending before it ends)."""
    local = Local(url)
    local.make()
    remote = Remote(url)
    deadline = time.monotonic() + timeout
    uploaded: list[str] = []
    while True:
        if not local.upload_lock.acquire(wait):
            return uploaded
        try:
            while time.monotonic() < deadline:
                done = upload_pass(remote, local, deadline)
                if not done:
                    break
                uploaded.extend(r for r in done if r not in uploaded)
        finally:
            local.upload_lock.release()
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
            if self.local.upload_lock.busy():
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
    return f"{problem}; the run is kept in {Local(url).staging.root} and `chkpt sync` uploads it later"
