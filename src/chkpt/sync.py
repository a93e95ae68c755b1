"""A shared store in a bucket: uploads this machine's staging store to it, and reads it through a local cache.

Checkpoints are written to an ordinary local store (the *staging* store, crash-safe as ever)
and copied to the bucket by an uploader process, file by file, whatever the store's layout:
data files first (content-addressed, immutable: uploaded only if absent), then the runs'
manifests, then each run's index object `index/<run>.json` (its run record), so a checkpoint
is listed only once everything it refers to is there. Readers list `index/` (one request per
thousand runs), fetch the records and manifests of the runs that changed, and fetch data
files only when a variable is loaded, into a read cache that is an ordinary local store
(`CacheStore`), so every trust and integrity check of the local read path applies.
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

from chkpt import cleanup, eviction, fmt, paths, records
from chkpt.remote import Missing, Remote, RemoteError
from chkpt.store import Store, StoreError, is_script

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

GRACE = 24 * 3600  # gc never deletes a data object younger than this
FRESH = GRACE / 4  # data this machine saw in the bucket more recently than this is not checked again
LIVE = 15 * 60  # a "running" run whose index was not rewritten for this long is shown killed
WORKERS = 8
READ_UPLOAD = 10.0  # seconds a reading command spends uploading this machine's pending runs first
_NOT_DATA = ("runs", "tmp")  # top-level entries of a store that hold no content-addressed data


def _rel(parts: Iterable[str]) -> str:
    return "/".join(parts)


def _valid_run_id(text: str) -> bool:
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
        if name in _NOT_DATA or not os.path.isdir(start) or os.path.islink(start):
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
                    key = _rel(os.path.relpath(path, root).split(os.sep))
                    found.append((key, path, info.st_size, info.st_mtime))
    return found


def _manifest_key(run_id: str, index: int) -> str:
    return f"runs/{run_id}/checkpoints/{index:06d}.json"


def _index_key(run_id: str) -> str:
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
            self.manifests.append((_manifest_key(run_id, index), local.staging.checkpoint_path(run_id, index), mtime))


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
        remote.put(_index_key(snapshot.run_id), snapshot.record, mtime=snapshot.record_mtime)
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


# -- reading --------------------------------------------------------------------------------------------

class CacheStore(Store):
    """The read cache of a bucket store: a local store whose data files are fetched on first use.

    Run records are brought up to date by `refresh`; a manifest or data file the cache lacks is
    fetched when it is opened, then read and checked like any local file. Past `cap`, the
    least recently fetched data files are dropped (never ones this process fetched).
    """

    shared = True

    def __init__(self, local: Local, remote: Remote, cap: int) -> None:
        super().__init__(local.cache_root)
        self.local = local
        self.remote = remote
        self.cap = cap
        self.written: dict[str, float] = {}  # run → when its index object was last written
        self.lease = LIVE  # a "running" run whose index is younger than this is live
        self.indexes: dict[str, list[int]] = {}  # run → its checkpoints in the bucket, fetched or not
        self._fetched: set[str] = set()
        self._since_trim = 0

    @property
    def location(self) -> str:
        return self.local.url

    def _data_key(self, path: str) -> str | None:
        """The bucket key of a data file of this cache, None for anything else."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        parts = rel.split(os.sep)
        if rel.startswith("..") or parts[0] in _NOT_DATA or len(parts) < 2:
            return None
        return _rel(parts)

    def _manifest_key(self, path: str) -> str | None:
        """The bucket key of a manifest the cache knows of but has not fetched yet."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root)).split(os.sep)
        if len(rel) != 4 or rel[0] != "runs" or rel[2] != "checkpoints" or not rel[3].endswith(".json"):
            return None
        stem = rel[3][:-5]
        if not stem.isdigit() or int(stem) not in self.indexes.get(rel[1], ()):
            return None
        return _manifest_key(rel[1], int(stem))

    def _fetch(self, path: str) -> bool:
        """Fetch the data file or manifest `path` from the bucket; False if it is neither or absent."""
        key = self._data_key(path) or self._manifest_key(path)
        if key is None:
            return False
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = os.path.join(self.tmp_dir, f"{os.getpid()}-{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                mtime = self.remote.get_to(key, fd)
            except Missing:
                return False
            size = os.fstat(fd).st_size
            os.close(fd)
            fd = -1
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            os.replace(tmp, path)
        finally:
            if fd >= 0:
                os.close(fd)
            if os.path.lexists(tmp):
                os.unlink(tmp)
        if key.startswith("runs/"):
            return True  # a manifest: small, and not data the cap is about
        self._fetched.add(path)
        self._since_trim += size
        if self._since_trim > self.cap // 10:
            self._trim()
        return True

    def _check_dir(self, path: str, what: str) -> None:
        try:
            super()._check_dir(path, what)
        except FileNotFoundError:
            if self._data_key(os.path.join(path, "x")) is None:
                raise
            os.makedirs(path, mode=0o700, exist_ok=True)
            super()._check_dir(path, what)

    def _open_trusted(self, path: str, what: str) -> int:
        try:
            return super()._open_trusted(path, what)
        except FileNotFoundError:
            if not self._fetch(path):
                raise
            return super()._open_trusted(path, what)

    def is_live(self, run_id: str) -> bool:
        """A "running" run whose writer rewrote its record within LIVE (its lease)."""
        if time.time() - self.written.get(run_id, 0.0) >= self.lease:
            return False
        try:
            return records.decode_run(self._read_trusted(self._run_file(run_id), "run record"))["status"] == "running"
        except (OSError, ValueError, StoreError):
            return False

    def _trim(self) -> None:
        self._since_trim = 0
        files = sorted(data_files(self.root), key=lambda f: f[3])
        total = sum(f[2] for f in files)
        for _key, path, size, _mtime in files:
            if total <= self.cap * 0.9:
                break
            if path not in self._fetched:
                try:
                    os.unlink(path)
                    total -= size
                except OSError:
                    continue

    def _write(self, path: str, data: bytes, mtime: float | None) -> None:
        self._write_file(path, [data])
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    def _fetch_run(self, run_id: str) -> list[int]:
        """Bring one run's record up to date; its checkpoint indexes. Manifests are fetched when
        read (`_fetch`); those of thinned checkpoints are dropped."""
        record, record_mtime = self.remote.get(_index_key(run_id))
        directory = self.run_dir(run_id)
        os.makedirs(os.path.join(directory, "checkpoints"), mode=0o700, exist_ok=True)
        try:
            summary = records.decode_run(record).get("summary")
            wanted = sorted(int(i) for i in summary["indexes"])
        except (ValueError, TypeError, KeyError, AttributeError):  # a record without a summary
            wanted = sorted(int(o.key.rsplit("/", 1)[1][:-5]) for o in self.remote.list(f"runs/{run_id}/checkpoints")
                            if o.key.endswith(".json") and o.key.rsplit("/", 1)[1][:-5].isdigit())
        self.indexes[run_id] = wanted
        for index in set(super().checkpoint_indexes(run_id)) - set(wanted):
            self.delete_checkpoint(run_id, index)
        self._write(os.path.join(directory, "run.json"), record, record_mtime)
        return wanted

    def checkpoint_indexes(self, run_id: str) -> list[int]:
        return sorted(set(super().checkpoint_indexes(run_id)) | set(self.indexes.get(run_id, ())))

    def checkpoint_mtimes(self, run_id: str) -> dict[int, float]:
        """Fetched manifests with their writer's mtimes; the others as written long ago (they were
        uploaded before the record that lists them, so the record's summary stands for them)."""
        found = super().checkpoint_mtimes(run_id)
        for index in self.indexes.get(run_id, ()):
            found.setdefault(index, 0.0)
        return dict(sorted(found.items()))

    def refresh(self) -> None:
        """List the bucket's runs; fetch the records of those that changed."""
        self.create()
        cached = self.local.cached_runs()
        self.indexes = {run_id: indexes for run_id, (_, indexes) in cached.items()}
        listed = {}
        for found in self.remote.list("index"):
            name = found.key.rsplit("/", 1)[-1]
            if name.endswith(".json") and _valid_run_id(name[:-5]):
                listed[name[:-5]] = found
        self.written = {run_id: found.modified for run_id, found in listed.items()}
        changed = [run_id for run_id, found in listed.items() if cached.get(run_id, ("",))[0] != found.etag
                   or not os.path.exists(os.path.join(self.run_dir(run_id), "run.json"))]

        def fetch(run_id: str) -> None:
            try:
                cached[run_id] = (listed[run_id].etag, self._fetch_run(run_id))
            except Missing:
                cached.pop(run_id, None)

        try:
            parallel(fetch, changed, workers=16)
        finally:
            for run_id in self.run_ids():
                if run_id not in listed:  # removed from the bucket
                    self.delete_run(run_id)
                    cached.pop(run_id, None)
                    self.indexes.pop(run_id, None)
            self.local.save_cached_runs(cached)


def check(url: str) -> list[tuple[str, bool, str]]:
    """`chkpt doctor`'s look at the bucket: reachable and writable (a probe object written, read
    and deleted), the clock skew against the server's times, and this machine's pending uploads."""
    local = Local(url)
    remote = Remote(url)
    checks: list[tuple[str, bool, str]] = []
    probe = f"tmp/probe-{secrets.token_hex(6)}"
    try:
        before = time.time()
        remote.put(probe, b"chkpt doctor probe\n")
        after = time.time()
        there = remote.head(probe)
        remote.delete(probe)
    except RemoteError as exc:
        checks.append(("bucket", False, str(exc)))
        return checks
    checks.append(("bucket", True, f"reachable and writable: {url}"))
    if there is not None:
        # the server's time of the upload, to its one-second precision, against ours
        skew = there.modified - (before + after) / 2
        ok = abs(skew) < 60
        checks.append(("clock", ok, f"{abs(skew):.0f}s {'behind' if skew > 0 else 'ahead of'} the server"
                       + ("" if ok else f" (over 60 s: other machines may see live runs as killed after "
                                        f"{LIVE // 60:.0f} min, or take killed ones for live)")))
    waiting = local.pending()
    checks.append(("uploads", True, f"{fmt.plural(len(waiting), 'run')} of this machine waiting for upload"
                   + (" (chkpt sync uploads them)" if waiting else "")))
    return checks


def reading_store(url: str, cache_size: int, *, warn: Callable[[str], None]) -> CacheStore:
    """The read cache of the bucket, brought up to date: this machine's pending runs uploaded first
    (for READ_UPLOAD seconds; the rest is left to a background uploader). Offline, the cache as
    it is, with one warning."""
    local = Local(url)
    local.make()
    remote = Remote(url)
    cache = CacheStore(local, remote, cache_size)
    try:
        if local.pending() or local.upload_lock.busy():
            try:
                upload(url, timeout=READ_UPLOAD, wait=2)
            except Unfinished:
                pass
            left = local.pending()
            if left:  # the rest in the background (unless an uploader is at it already)
                Uploader(url, 0, -1)._start(report=False)
                warn(f"{fmt.plural(len(left), 'run')} of this machine still being uploaded to {url}; "
                     "listed once there")
        cache.refresh()
    except RemoteError as exc:
        warn(f"{exc}; showing this machine's cached copy")
    return cache


# -- gc of the bucket -----------------------------------------------------------------------------------

def collect(cache: CacheStore, *, max_size: int | None = None, older_than: float | None = None,
            script: str | None = None, dry_run: bool = False, remove: set[str] | None = None) -> cleanup.Report:
    """Evict runs from the bucket and delete the data no run refers to, without any lock.

    The data is listed before the run records are read, so data a run committed meanwhile is
    either seen as referenced or listed as young. Only data older than GRACE is deleted,
    evicted runs' included, and each is looked at again just before its deletion: a writer
    that finds an old object it refers to rewrites it first (see `_upload_data`). A run whose
    record says "running" and was rewritten within GRACE is never evicted. `remove` deletes exactly these
    runs instead (`chkpt rm`).
    """
    remote = cache.remote
    blob_prefix = _rel(os.path.relpath(cache.blobs_dir, cache.root).split(os.sep)) + "/"
    blobs: dict[str, tuple[int, float]] = {}
    keys: dict[str, str] = {}
    for found in remote.list(blob_prefix.rstrip("/")):
        digest = found.key[len(blob_prefix):].replace("/", "")
        blobs[digest] = (found.size, found.modified)
        keys[digest] = found.key
    cache.refresh()
    # a writer silent for a while (one long C call) is still alive: gc gives it a day, not LIVE
    cache.lease = GRACE
    problems: list[str] = []
    runs, _damaged = cleanup.survey(cache, problems)
    of_script = None if script is None else (lambda run: is_script(run.meta.get("script"), script))
    now = time.time()
    plan = eviction.plan(runs, blobs, [], now=now, max_size=max_size, older_than=older_than,
                         of_script=of_script, remove=remove, grace=GRACE)
    doomed = [d for d in plan.blobs if now - blobs[d][1] > GRACE]
    report = cleanup.Report(plan, problems)
    report.freed = sum(blobs[d][0] for d in doomed)
    report.store_size_after = report.store_size_before - report.freed
    uncounted = set(doomed)
    for (run, _), meta in zip(plan.runs, report.runs, strict=True):  # what each evicted run frees now
        mine = uncounted & set(run.blobs)
        meta["freed"] = sum(blobs[d][0] for d in mine)
        uncounted -= mine
    if dry_run:
        return report
    for run, _ in plan.runs:  # the index first: the run leaves every listing at once
        remote.delete(_index_key(run.id))
        for found in remote.list(f"runs/{run.id}"):
            remote.delete(found.key)
        cache.delete_run(run.id)

    def delete(digest: str) -> None:
        there = remote.head(keys[digest])
        if there is not None and time.time() - there.modified > GRACE:
            remote.delete(keys[digest])

    parallel(delete, doomed)
    parallel(remote.delete, _stale_manifests(cache, time.time()))
    return report


def _stale_manifests(cache: CacheStore, now: float) -> list[str]:
    """Manifests in the bucket that no index lists (thinned by their writer, or left by an upload
    that never reached its index), uploaded more than GRACE ago."""
    stale = []
    for found in cache.remote.list("runs"):
        parts = found.key.split("/")
        if len(parts) != 4 or parts[2] != "checkpoints" or not parts[3][:-5].isdigit():
            continue
        if int(parts[3][:-5]) not in cache.indexes.get(parts[1], ()) and now - found.modified > GRACE:
            stale.append(found.key)
    return stale
