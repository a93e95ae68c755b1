"""The backend protocol: where a store's files live, by key (layout.py names the keys).

A backend stores whole files under keys and offers six calls — get, put_atomic,
put_if_absent, stat, list, delete — plus open (read a large file in place), touch, where,
delete_all, and locks where it has them. Everything above it (runs, pins, usage,
checkpoints, blobs, leftovers: core.py) is written once over this protocol. The models are
restic's backend interface and joblib's store backends.

- `local.LocalBackend`: a directory, with the trust checks (the user's own regular files,
  nobody else can write them, no symbolic link followed) and flock'ed locks.
- `objects.ObjectBackend`: a bucket through obstore (s3://, gs://, az://: a scheme is a cloud,
  its client and its credentials), no locks: liveness is a lease.
- `cache.ReadCache`: a local backend in front of a bucket, fetching what it lacks on first read
  (a wrapper, as hypothesis's example databases wrap each other); `cache.Staged` puts this
  machine's runs not yet uploaded in front of it.

Absent files raise FileNotFoundError; every other failure is a StoreError naming the file.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Protocol

    from chkpt.store.locks import FileLock
else:
    Protocol = object


class Entry:
    """One listed or looked-up file: its key, size in bytes, modification time, and kind
    ("file", "folder", or "other": a link or special file where a file belongs). `tag`
    changes whenever the file does (a bucket's ETag)."""

    __slots__ = ("key", "kind", "mtime", "size", "tag")

    def __init__(self, key: str, size: int, mtime: float, kind: str = "file", tag: str = "") -> None:
        self.key = key
        self.size = size
        self.mtime = mtime
        self.kind = kind
        self.tag = tag

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]


class Reader(Protocol):
    """An open file of a store, read in place: `size`, `read()`, `read_into(memory)`, `map()`."""

    size: int

    def read(self) -> bytes: ...
    def read_into(self, target: memoryview) -> int: ...
    def map(self) -> Any: ...
    def close(self) -> None: ...
    def __enter__(self) -> Reader: ...
    def __exit__(self, *exc_info: object) -> None: ...


class Backend(Protocol):
    """Where a store's files live."""

    location: str  # for people: a directory or a URL
    shared: bool  # written by many machines at once, without locks

    def where(self, key: str) -> str:
        """The file `key` for people: its path or URL."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes of the file `key`."""
        ...

    def open(self, key: str) -> Reader:
        """The file `key`, opened to be read in place (large blobs)."""
        ...

    def put_atomic(self, key: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        """Store the bytes-like `chunks` as `key`, which appears whole or not at all, replacing
        what was there. `verify()` is asked once all is written: False abandons the file."""
        ...

    def put_if_absent(self, key: str, chunks: Iterable[Any]) -> bool:
        """As put_atomic, only if `key` is absent; False when it is there already."""
        ...

    def stat(self, key: str) -> Entry | None:
        """The file `key` (any kind), None when it is absent."""
        ...

    def list(self, prefix: str, *, deep: bool = True) -> list[Entry]:
        """The files below the folder `prefix` (deep), or its entries, folders included.
        FileNotFoundError when a local folder is absent (a bucket has no folders: [])."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file `key` (nothing when absent)."""
        ...

    def delete_all(self, prefix: str) -> None:
        """Remove everything below `prefix`, gone at once for readers."""
        ...

    def touch(self, key: str) -> None:
        """Mark `key` as used now (gc's grace, the least-recently-used order); best effort."""
        ...

    def lock(self, key: str, *, exclusive: bool, blocking: bool = True) -> FileLock | None:
        """A lock on the file `key`; None for a backend without locks."""
        ...

    def held(self, key: str) -> bool:
        """Whether a live process holds the lock `key` (a bucket: the run's lease)."""
        ...
