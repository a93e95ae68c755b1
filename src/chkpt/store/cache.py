"""Reading a store in a bucket: a local read cache in front of it, and this machine's runs
still waiting for upload in front of that. Both are backends wrapping backends (hypothesis's
example databases are the model), so every read goes through the local store's checks.

`ReadCache` lists the bucket's runs through its `index/` (one request per thousand runs),
fetches the records of those that changed, and fetches manifests and data files only when
they are first read. Past `cap`, the least recently fetched data files are dropped (never ones
this process fetched). A "running" run is live while its index object is younger than its
lease (its writer rewrites it at every checkpoint). `Staged` shows this machine's staging
store for the runs it has not uploaded yet (as they are now), and the cache for the others.
"""

from __future__ import annotations

import json
import os
import time

from chkpt import records
from chkpt.store import layout
from chkpt.store.backend import Entry
from chkpt.store.core import Store
from chkpt.store.errors import StoreError
from chkpt.store.files import Descriptor
from chkpt.store.local import LocalBackend, LocalFile
from chkpt.store.threads import parallel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from chkpt.store.objects import ObjectBackend

LIVE = 15 * 60  # a "running" run whose index was not rewritten for this long is shown killed
FETCHERS = 16
CACHE_INDEX = "cache-index.json"  # {run: [ETag of its index object, its checkpoint indexes]}


def _date(descriptor: Descriptor, mtime: float | None) -> None:
    """Give a file fetched from the bucket the mtime it had on its writer's machine (so a record's
    summary is current here exactly when it was there)."""
    if mtime is not None:
        os.utime(descriptor.check(), (mtime, mtime))


class ReadCache:
    """A bucket read through a local cache (see backend.Backend)."""

    shared = True

    def __init__(self, cache: LocalBackend, bucket: ObjectBackend, cap: int, home: LocalBackend) -> None:
        self.local = cache
        self.bucket = bucket
        self.location = bucket.url
        self.cap = cap
        self.home = home  # this machine's files for the bucket, the cache's index among them
        self.written: dict[str, float] = {}  # run → when its index object was last written
        self.lease = LIVE  # a "running" run whose index is younger than this is live
        self.indexes: dict[str, list[int]] = {}  # run → its checkpoints in the bucket, fetched or not
        self._fetched: set[str] = set()
        self._since_trim = 0

    # -- what the cache knows of the bucket ---------------------------------------------------------

    def _load_index(self) -> dict[str, tuple[str, list[int]]]:
        try:
            found = json.loads(self.home.get(CACHE_INDEX))
            return {k: (v[0], [int(i) for i in v[1]]) for k, v in found.items()
                    if layout.valid_run_id(k) and isinstance(v[0], str) and isinstance(v[1], list)}
        except (OSError, StoreError, ValueError, AttributeError, TypeError, KeyError, IndexError):
            return {}

    def _save_index(self, runs: dict[str, tuple[str, list[int]]]) -> None:
        self.home.put_atomic(CACHE_INDEX, [json.dumps(runs).encode()])

    def refresh(self) -> None:
        """List the bucket's runs; fetch the records of those that changed. RemoteError when the
        bucket cannot be read (the cache stays as it was)."""
        Store(self.local).create()
        cached = self._load_index()
        self.indexes = {run_id: indexes for run_id, (_, indexes) in cached.items()}
        listed = {run_id: found for found in self.bucket.list(layout.INDEX)
                  if (run_id := layout.parse_index_object(found.key)) is not None}
        self.written = {run_id: found.mtime for run_id, found in listed.items()}
        changed = [run_id for run_id, found in listed.items() if cached.get(run_id, ("",))[0] != found.tag
                   or self.local.stat(layout.run_record(run_id)) is None]

        def fetch(run_id: str) -> None:
            try:
                cached[run_id] = (listed[run_id].tag, self._fetch_run(run_id))
            except FileNotFoundError:
                cached.pop(run_id, None)

        try:
            parallel(fetch, changed, FETCHERS)
        finally:
            for entry in self.local.list(layout.RUNS, deep=False):
                if entry.name not in listed:  # removed from the bucket
                    self.local.delete_all(entry.key)
                    cached.pop(entry.name, None)
                    self.indexes.pop(entry.name, None)
            self._save_index(cached)

    def _fetch_run(self, run_id: str) -> list[int]:
        """Bring one run's record up to date; its checkpoint indexes. Manifests are fetched when
        read; those of thinned checkpoints are dropped."""
        record, mtime = self.bucket.get_with_mtime(layout.index_object(run_id))
        try:
            wanted = sorted(int(i) for i in records.decode_run(record)["summary"]["indexes"])
        except (ValueError, TypeError, KeyError):  # a record without a summary
            wanted = sorted(index for found in self.bucket.list(layout.checkpoints(run_id))
                            if (index := layout.manifest_index(found.name)) is not None)
        self.indexes[run_id] = wanted
        try:
            for entry in self.local.list(layout.checkpoints(run_id), deep=False):
                if layout.manifest_index(entry.name) not in wanted:
                    self.local.delete(entry.key)
        except FileNotFoundError:
            pass
        def keep(descriptor: Descriptor) -> bool:
            descriptor.write(record)
            _date(descriptor, mtime)
            return True

        self.local.fill(layout.run_record(run_id), keep)
        return wanted

    def _fetch(self, key: str) -> bool:
        """Fetch the data file or manifest `key` from the bucket; False if it is neither or absent."""
        manifest = layout.parse_manifest(key)
        if not layout.is_data(key) and (manifest is None or manifest[1] not in self.indexes.get(manifest[0], ())):
            return False

        def download(descriptor: Descriptor) -> bool:
            try:
                _date(descriptor, self.bucket.download(key, descriptor))
            except FileNotFoundError:
                return False
            return True

        if not self.local.fill(key, download):
            return False
        if manifest is None:  # data: what the cap is about
            self._fetched.add(key)
            found = self.local.stat(key)
            self._since_trim += found.size if found else 0
            if self._since_trim > self.cap // 10:
                self._trim()
        return True

    def _trim(self) -> None:
        self._since_trim = 0
        files = sorted(Store(self.local).data_files(), key=lambda entry: entry.mtime)
        total = sum(entry.size for entry in files)
        for entry in files:
            if total <= self.cap * 0.9:
                break
            if entry.key not in self._fetched:
                self.local.delete(entry.key)
                total -= entry.size

    # -- the protocol ---------------------------------------------------------------------------

    def where(self, key: str) -> str:
        return self.local.where(key)

    def check_root(self) -> None:
        self.local.check_root()

    def make_root(self) -> None:
        self.local.make_root()

    def make_folder(self, key: str) -> None:
        self.local.make_folder(key)

    def open(self, key: str) -> LocalFile:
        try:
            return self.local.open(key)
        except FileNotFoundError:
            if not self._fetch(key):
                raise
            return self.local.open(key)

    def get(self, key: str) -> bytes:
        with self.open(key) as opened:
            return opened.read()

    def stat(self, key: str) -> Entry | None:
        return self.local.stat(key)

    def list(self, prefix: str, *, deep: bool = True) -> list[Entry]:
        """The cache's files; a run's checkpoints include those not fetched yet (as written long
        ago: they were uploaded before the record that lists them, so its summary stands for them)."""
        parts = prefix.split("/")
        if deep or len(parts) != 3 or parts[0] != layout.RUNS or parts[2] != layout.CHECKPOINTS:
            return self.local.list(prefix, deep=deep)
        try:
            found = self.local.list(prefix, deep=False)
        except FileNotFoundError:  # none fetched yet
            found = []
        if parts[1] in self.indexes:
            have = {entry.name for entry in found}
            found += [Entry(key, 0, 0.0) for index in self.indexes.get(parts[1], ())
                      if (key := layout.manifest(parts[1], index)).rpartition("/")[2] not in have]
        return found

    def put_atomic(self, key: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        return self.local.put_atomic(key, chunks, verify)

    def put_if_absent(self, key: str, chunks: Iterable[Any]) -> bool:
        return self.local.put_if_absent(key, chunks)

    def delete(self, key: str) -> None:
        """Gone from the bucket, then from the cache."""
        self.bucket.delete(layout.bucket_key(key))
        self.local.delete(key)

    def delete_all(self, prefix: str) -> None:
        """A run: its index object first (it leaves every listing at once), then its manifests."""
        parts = prefix.split("/")
        if len(parts) == 2 and parts[0] == layout.RUNS:
            self.bucket.delete(layout.index_object(parts[1]))
        self.bucket.delete_all(prefix)
        self.local.delete_all(prefix)
        self.indexes.pop(parts[-1], None)

    def touch(self, key: str) -> None:
        self.local.touch(key)

    def lock(self, key: str, *, exclusive: bool, blocking: bool = True) -> None:
        return None

    def held(self, key: str) -> bool:
        """A run's lease: "running" in a record its writer rewrote within `lease`."""
        run_id = key.split("/")[1]
        if time.time() - self.written.get(run_id, 0.0) >= self.lease:
            return False
        try:
            return records.decode_run(self.local.get(layout.run_record(run_id)))["status"] == "running"
        except (OSError, ValueError, StoreError):
            return False


class Staged:
    """This machine's runs waiting for upload, read from its staging store as they are now;
    every other file from the bucket's read cache (see backend.Backend)."""

    shared = True

    def __init__(self, staging: LocalBackend, cache: ReadCache, waiting: list[str], uploading: bool) -> None:
        self.staging = staging
        self.cache = cache
        self.location = cache.location
        self.waiting = waiting  # runs of this machine not (or not as they are now) in the bucket
        self.uploading = uploading  # whether an uploader of this machine is at work

    def _route(self, key: str) -> Any:
        parts = key.split("/")
        if parts[0] == layout.RUNS and len(parts) > 1:
            return self.staging if parts[1] in self.waiting else self.cache
        if layout.is_data(key) and self.waiting and self.staging.stat(key) is not None:
            return self.staging
        return self.cache

    def where(self, key: str) -> str:
        return str(self._route(key).where(key))

    def check_root(self) -> None:
        self.cache.check_root()

    def open(self, key: str) -> LocalFile:
        return self._route(key).open(key)  # type: ignore[no-any-return]

    def get(self, key: str) -> bytes:
        return self._route(key).get(key)  # type: ignore[no-any-return]

    def stat(self, key: str) -> Entry | None:
        return self._route(key).stat(key)  # type: ignore[no-any-return]

    def list(self, prefix: str, *, deep: bool = True) -> list[Entry]:
        if prefix == layout.RUNS:
            found = [e for e in self.cache.list(prefix, deep=deep) if e.name not in self.waiting]
            return found + [Entry(layout.run_dir(run_id), 0, 0.0, "folder") for run_id in self.waiting]
        return self._route(prefix).list(prefix, deep=deep)  # type: ignore[no-any-return]

    def put_atomic(self, key: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        return self.cache.put_atomic(key, chunks, verify)

    def put_if_absent(self, key: str, chunks: Iterable[Any]) -> bool:
        return self.cache.put_if_absent(key, chunks)

    def delete(self, key: str) -> None:
        self._route(key).delete(key)

    def delete_all(self, prefix: str) -> None:
        """A run waiting for upload is deleted here and in the bucket (an older upload of it)."""
        if self._route(prefix) is self.staging:
            self.staging.delete_all(prefix)
        self.cache.delete_all(prefix)

    def touch(self, key: str) -> None:
        self._route(key).touch(key)

    def lock(self, key: str, *, exclusive: bool, blocking: bool = True) -> None:
        return None

    def held(self, key: str) -> bool:
        return bool(self._route(key).held(key))
