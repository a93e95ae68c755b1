"""The on-disk store: content-addressed blobs, runs, and checkpoint manifests.

Layout (docs/store-format.md has the full format):

    <root>/STORE                     format marker
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
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil

import xxhash

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

FORMAT = 1
MARKER = f"chkpt store {FORMAT}\n"
TMP_GRACE_SECONDS = 3600.0


class StoreError(Exception):
    """A store that cannot be used or a file in it that cannot be read; says which."""


def hash_buffer(data: Any) -> str:
    """The content address of a bytes-like object (hashed in place, never copied)."""
    return xxhash.xxh3_128_hexdigest(data)


def _write_file(path: str, data: Any, tmp_dir: str) -> None:
    """Write `data` to `path` so that `path` appears only complete."""
    tmp = os.path.join(tmp_dir, f"{os.getpid()}-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data).cast("B")
        while view:
            written = os.write(fd, view[: 1 << 30])
            view = view[written:]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


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


class Store:
    """One store root on disk."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs_dir = os.path.join(root, "blobs")
        self.runs_dir = os.path.join(root, "runs")
        self.tmp_dir = os.path.join(root, "tmp")

    # -- set-up ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store (user-only permissions) or check that it is ours."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        info = os.stat(self.root)
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise StoreError(f"{self.root} belongs to another user; not using it")
        for directory in (self.blobs_dir, self.runs_dir, self.tmp_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        marker = os.path.join(self.root, "STORE")
        if not os.path.exists(marker):
            _write_file(marker, MARKER.encode(), self.tmp_dir)

    def exists(self) -> bool:
        return os.path.isdir(self.runs_dir)

    # -- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs_dir, digest[:2], digest[2:])

    def put_blob(self, data: Any) -> tuple[str, int]:
        """Store bytes-like `data`; returns (hash, bytes newly written: 0 when deduplicated)."""
        digest = hash_buffer(data)
        path = self.blob_path(digest)
        try:
            os.utime(path)  # already stored: refresh it so gc's grace period protects it
            return digest, 0
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        _write_file(path, data, self.tmp_dir)
        return digest, memoryview(data).nbytes

    def read_blob(self, digest: str, expected_size: int | None = None) -> Any:
        """The blob's bytes; large ones memory-mapped copy-on-write (writable, read lazily)."""
        path = self.blob_path(digest)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise StoreError(f"blob {digest} is missing from {self.blobs_dir}") from None
        if expected_size is not None and size != expected_size:
            raise StoreError(f"blob {digest} is truncated ({size} of {expected_size} bytes)")
        if size < (1 << 20):
            with open(path, "rb") as handle:
                return bytearray(handle.read())
        import mmap

        with open(path, "rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)

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
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)


class RunWriter:
    """The one process writing a run: holds its lock, adds checkpoints, records its end."""

    def __init__(self, store: Store, run_id: str, meta: dict[str, Any]) -> None:
        self.store = store
        self.run_id = run_id
        self.directory = store.run_dir(run_id)
        self.meta = dict(meta, id=run_id, status="running", format=FORMAT)
        os.makedirs(os.path.join(self.directory, "checkpoints"), mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT,
                                0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.next_index = 1
        self.save_meta()

    def save_meta(self) -> None:
        data = json.dumps(self.meta, indent=1, default=str).encode()
        _write_file(os.path.join(self.directory, "run.json"), data, self.store.tmp_dir)

    def add_checkpoint(self, manifest: dict[str, Any]) -> int:
        """Commit a manifest whose blobs are all written; returns its index."""
        index = self.next_index
        manifest = dict(manifest, index=index, run=self.run_id)
        data = json.dumps(manifest, indent=1, default=str).encode()
        _write_file(self.store.checkpoint_path(self.run_id, index), data, self.store.tmp_dir)
        self.next_index += 1
        return index

    def thin(self, keep: int) -> None:
        """Keep at most `keep` checkpoints: the first, exit/crash/signal ones, then the latest."""
        indexes = self.store.checkpoint_indexes(self.run_id)
        if keep <= 0 or len(indexes) <= keep:
            return
        protected = {indexes[0], indexes[-1]}
        for index in indexes:
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
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
