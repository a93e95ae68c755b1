"""The on-disk store: content-addressed blobs, runs, and checkpoint manifests.

Layout (docs/store-format.md has the full format):

    <root>/STORE                     format marker
    <root>/gc.lock                   flock: shared while a checkpoint commits, exclusive for gc
    <root>/usage                     running estimate of the blobs' total size (for the cap)
    <root>/blobs/ab/cdef…            raw bytes, named by their xxh3-128 hash
    <root>/runs/<run>/run.json       run metadata (rewritten atomically)
    <root>/runs/<run>/lock           flock'ed by the writing process while it lives
    <root>/runs/<run>/checkpoints/000001.json   one manifest per checkpoint
    <root>/tmp/                      files being written; renamed into place when complete

Commit protocol: a checkpoint's blobs are written first (each to tmp/, then renamed to its
hash name), its manifest last (tmp/, then renamed). A reader therefore only ever sees
complete checkpoints, and a process killed at any instant leaves at worst orphan files in
tmp/ or unreferenced blobs, which gc removes once they are older than a grace period.
Unchanged data has the same hash and is not written again, in this run or any other.
Nothing is fsync'ed: a killed process loses nothing the kernel has accepted, and what a
power cut could leave behind (a short blob) is caught by the size and hash checks on load.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import time

import xxhash

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

FORMAT = 1
MARKER = f"chkpt store {FORMAT}\n"
TMP_GRACE_SECONDS = 3600.0
WRITE_CHUNK = 16 << 20  # measured here: 16 MiB writes ~5 GB/s, 1 GiB writes ~0.4 GB/s

# Lock descriptors this process holds. A forked child closes its copies at once: a flock
# belongs to the open file, so a long-lived child (a multiprocessing worker) would otherwise
# keep its parent's run "live" and block gc forever.
_held_fds: set[int] = set()


def _close_held_fds_in_child() -> None:
    for fd in _held_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_held_fds_in_child)


def hold_lock(path: str, mode: int, blocking: bool = True) -> int | None:
    """Open and flock `path`; the descriptor, or None when non-blocking and busy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            return None
        raise
    _held_fds.add(fd)
    return fd


def release_lock(fd: int) -> None:
    """Close a descriptor from `hold_lock` (a no-op after a fork closed it in the child)."""
    if fd in _held_fds:
        _held_fds.discard(fd)
        os.close(fd)


class StoreError(Exception):
    """A store that cannot be used or a file in it that cannot be read; says which."""


def hash_buffer(data: Any) -> str:
    """The content address of a bytes-like object (hashed in place, never copied)."""
    return xxhash.xxh3_128_hexdigest(data)


def _reserve(fd: int, size: int) -> None:
    """Allocate a large file's blocks up front: writing 1 GiB then runs ~1.4x faster on ext4
    here (0.15 s instead of 0.21 s, as fast as numpy.save). Best effort: not every file
    system can; running out of space still fails the write itself."""
    if size >= (1 << 20) and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            pass


def _write_file(path: str, chunks: Iterable[Any], tmp_dir: str,
                verify: Callable[[], bool] | None = None) -> bool:
    """Write the bytes-like `chunks` one after the other to `path`, which appears only complete.

    `verify()` is asked once all is written, before `path` appears; False abandons the file
    (the writer's source changed meanwhile) and returns False.
    """
    tmp = os.path.join(tmp_dir, f"{os.getpid()}-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if isinstance(chunks, list | tuple):
            _reserve(fd, sum(memoryview(chunk).nbytes for chunk in chunks))
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                written = os.write(fd, view[:WRITE_CHUNK])
                view = view[written:]
        os.close(fd)
        fd = -1
        if verify is not None and not verify():
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
        return True
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def is_script(path: Any, wanted: str) -> bool:
    """Whether a run's script `path` is `wanted`: a path (relative to the cwd) or a file name."""
    if not isinstance(path, str):
        return False
    return path == os.path.abspath(wanted) or os.path.basename(path) == wanted


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is corrupt or unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} is corrupt (not a JSON object)")
    return data


def dump_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=1, default=str).encode()


class Store:
    """One store root on disk."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs_dir = os.path.join(root, "blobs")
        self.runs_dir = os.path.join(root, "runs")
        self.tmp_dir = os.path.join(root, "tmp")
        self.usage_path = os.path.join(root, "usage")

    # -- set-up ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store (user-only permissions) or check that it is ours."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        info = os.stat(self.root)
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise StoreError(f"{self.root} belongs to another user; not using it")
        if info.st_mode & 0o077:
            os.chmod(self.root, 0o700)  # it holds the user's data
        # runs/ last: `exists()` looks for it, so a concurrent gc never finds a half-made store
        for directory in (self.tmp_dir, self.blobs_dir, self.runs_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        marker = os.path.join(self.root, "STORE")
        if not os.path.exists(marker):
            _write_file(marker, [MARKER.encode()], self.tmp_dir)

    def exists(self) -> bool:
        return os.path.isdir(self.runs_dir)

    # -- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs_dir, digest[:2], digest[2:])

    def has_blob(self, digest: str, size: int) -> bool:
        """Whether the blob is stored whole; reusing it refreshes its mtime (gc's grace period).

        A blob of the wrong size (cut short by a power loss, or damaged) counts as absent, so
        the next write of the same data replaces it instead of referring to it again.
        """
        path = self.blob_path(digest)
        try:
            if os.stat(path).st_size != size:
                return False
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    def write_blob(self, digest: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        """Store the bytes whose hash is `digest`, given as consecutive bytes-like chunks;
        False when `verify()` (asked before the blob appears) says they changed meanwhile."""
        path = self.blob_path(digest)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return _write_file(path, chunks, self.tmp_dir, verify)

    def put_blob(self, data: Any) -> tuple[str, int]:
        """Store bytes-like `data`; returns (hash, bytes newly written: 0 when deduplicated)."""
        digest = hash_buffer(data)
        size = memoryview(data).nbytes
        if self.has_blob(digest, size):
            return digest, 0
        self.write_blob(digest, [data])
        return digest, size

    def read_blob(self, digest: str, expected_size: int | None = None) -> Any:
        """The blob's bytes, checked against its hash; large ones memory-mapped copy-on-write."""
        path = self.blob_path(digest)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise StoreError(f"blob {digest} is missing from {self.blobs_dir}") from None
        if expected_size is not None and size != expected_size:
            raise StoreError(f"blob {digest} is truncated ({size} of {expected_size} bytes)")
        with open(path, "rb") as handle:
            if size < (1 << 20):
                data: Any = bytearray(handle.read())
            else:
                import mmap

                data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        if hash_buffer(data) != digest:
            raise StoreError(f"blob {digest} is corrupt (its content does not match its hash)")
        return data

    def blob_files(self) -> Iterator[tuple[str, os.stat_result]]:
        """(hash, stat) of every blob file."""
        try:
            shards = os.listdir(self.blobs_dir)
        except FileNotFoundError:
            return
        for shard in shards:
            shard_dir = os.path.join(self.blobs_dir, shard)
            try:
                names = os.listdir(shard_dir)
            except OSError:
                continue
            for name in names:
                try:
                    yield shard + name, os.stat(os.path.join(shard_dir, name))
                except OSError:
                    continue

    # -- the size estimate ----------------------------------------------------------------------
    # `usage` holds "base <bytes> <unix time>" (the blobs' total as gc last measured it), then
    # one "+<bytes>" line appended by each commit. Appends happen under the shared gc lock and
    # gc rewrites the file under the exclusive one, so no addition is lost.

    def add_usage(self, new_bytes: int) -> None:
        fd = os.open(self.usage_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"+{new_bytes}\n".encode())
        finally:
            os.close(fd)

    def read_usage(self) -> tuple[int, float] | None:
        """(estimated blob bytes, when gc last measured them), None when unknown."""
        try:
            with open(self.usage_path, "rb") as handle:
                lines = handle.read().decode().split("\n")
            _, base, measured = lines[0].split()
            return int(base) + sum(int(line[1:]) for line in lines[1:] if line), float(measured)
        except (OSError, ValueError, UnicodeDecodeError):
            return None

    def reset_usage(self, total: int) -> None:
        _write_file(self.usage_path, [f"base {total} {time.time():.0f}\n".encode()], self.tmp_dir)

    # -- runs -----------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, run_id)

    def run_ids(self) -> list[str]:
        try:
            return sorted(os.listdir(self.runs_dir))
        except FileNotFoundError:
            return []

    def create_run(self, meta: dict[str, Any]) -> RunWriter:
        self.ensure()
        while True:
            run_id = secrets.token_hex(4)
            try:
                os.mkdir(self.run_dir(run_id), 0o700)
                break
            except FileExistsError:
                continue
        return RunWriter(self, run_id, meta)

    def is_live(self, run_id: str) -> bool:
        """Whether a process still holds the run's lock (i.e. is writing it)."""
        try:
            fd = os.open(os.path.join(self.run_dir(run_id), "lock"), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        finally:
            os.close(fd)
        return False

    def read_run(self, run_id: str) -> dict[str, Any]:
        """The run's metadata, with `status` "killed" for a writer that died mid-run."""
        meta = _read_json(os.path.join(self.run_dir(run_id), "run.json"))
        meta["id"] = run_id
        if meta.get("status") == "running" and not self.is_live(run_id):
            meta["status"] = "killed"
        return meta

    def checkpoint_indexes(self, run_id: str) -> list[int]:
        directory = os.path.join(self.run_dir(run_id), "checkpoints")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def checkpoint_path(self, run_id: str, index: int) -> str:
        return os.path.join(self.run_dir(run_id), "checkpoints", f"{index:06d}.json")

    def read_checkpoint(self, run_id: str, index: int) -> dict[str, Any]:
        return _read_json(self.checkpoint_path(run_id, index))

    def touch_run(self, run_id: str) -> None:
        """Mark the run as used now (loads count for the LRU cap)."""
        try:
            os.utime(os.path.join(self.run_dir(run_id), "run.json"))
        except OSError:
            pass

    def delete_run(self, run_id: str) -> None:
        """Remove a run at once: moved out of runs/ in one rename, then deleted from tmp/.

        Killed halfway, the run is either still whole or gone, and the rest of its directory
        sits in tmp/ until gc's next sweep.
        """
        trash = os.path.join(self.tmp_dir, f"run-{run_id}-{secrets.token_hex(4)}")
        try:
            os.rename(self.run_dir(run_id), trash)
        except FileNotFoundError:
            return
        except OSError:
            trash = self.run_dir(run_id)
        shutil.rmtree(trash, ignore_errors=True)


class RunWriter:
    """The one process writing a run: holds its lock, adds checkpoints, records its end."""

    def __init__(self, store: Store, run_id: str, meta: dict[str, Any]) -> None:
        self.store = store
        self.run_id = run_id
        self.directory = store.run_dir(run_id)
        self.meta = dict(meta, id=run_id, status="running", format=FORMAT)
        os.makedirs(os.path.join(self.directory, "checkpoints"), mode=0o700, exist_ok=True)
        self._lock_fd = hold_lock(os.path.join(self.directory, "lock"), fcntl.LOCK_EX)
        self.next_index = 1
        self.triggers: dict[int, str] = {}  # of this process's checkpoints, for thinning
        self.save_meta()

    def save_meta(self) -> None:
        path = os.path.join(self.directory, "run.json")
        _write_file(path, [dump_json(self.meta)], self.store.tmp_dir)

    def reserve_index(self) -> int:
        """The index of the next checkpoint, taken now although it commits later."""
        index = self.next_index
        self.next_index += 1
        return index

    def add_checkpoint(self, manifest: dict[str, Any], index: int | None = None) -> int:
        """Commit a manifest whose blobs are all written; returns its index."""
        if index is None:
            index = self.reserve_index()
        manifest = dict(manifest, index=index, run=self.run_id)
        _write_file(self.store.checkpoint_path(self.run_id, index), [dump_json(manifest)],
                    self.store.tmp_dir)
        self.triggers[index] = str(manifest.get("trigger"))
        return index

    def thin(self, keep: int) -> None:
        """Keep at most `keep` checkpoints: the first, exit/crash/signal ones, then the latest."""
        indexes = self.store.checkpoint_indexes(self.run_id)
        if keep <= 0 or len(indexes) <= keep:
            return
        protected = {indexes[0], indexes[-1]}
        for index in indexes:
            trigger = self.triggers.get(index)
            if trigger is None:
                try:
                    trigger = self.store.read_checkpoint(self.run_id, index).get("trigger")
                except (StoreError, FileNotFoundError):
                    continue
            if trigger in ("exit", "crash", "signal"):
                protected.add(index)
        removable = [i for i in indexes if i not in protected]
        for index in removable[: max(0, len(indexes) - keep)]:
            try:
                os.unlink(self.store.checkpoint_path(self.run_id, index))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None
