"""Reading a shared store in a bucket: the read cache (a local store fetching what it lacks), its gc, doctor's check.

Readers list `index/` (one request per thousand runs), fetch the records of the runs that
changed, and fetch manifests and data files only when read, into a read cache that is an
ordinary local store (`CacheStore`), so every trust and integrity check of the local read
path applies. docs/store-format.md ("Shared store") has the layout, the leases and gc's rules.
"""

from __future__ import annotations

import os
import secrets
import time

from chkpt import cleanup, eviction, fmt, records
from chkpt.remote import Missing, Remote, RemoteError
from chkpt.store import Store, StoreError, is_script
from chkpt.sync import (
    GRACE,
    NOT_DATA,
    Local,
    Unfinished,
    Uploader,
    data_files,
    index_key,
    manifest_key,
    parallel,
    rel_key,
    upload,
    valid_run_id,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

LIVE = 15 * 60  # a "running" run whose index was not rewritten for this long is shown killed
READ_UPLOAD = 10.0  # seconds a reading command spends uploading this machine's pending runs first

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
        if rel.startswith("..") or parts[0] in NOT_DATA or len(parts) < 2:
            return None
        return rel_key(parts)

    def _manifest_key(self, path: str) -> str | None:
        """The bucket key of a manifest the cache knows of but has not fetched yet."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root)).split(os.sep)
        if len(rel) != 4 or rel[0] != "runs" or rel[2] != "checkpoints" or not rel[3].endswith(".json"):
            return None
        stem = rel[3][:-5]
        if not stem.isdigit() or int(stem) not in self.indexes.get(rel[1], ()):
            return None
        return manifest_key(rel[1], int(stem))

    def _fetch(self, path: str) -> bool:
        """Fetch the data file or manifest `path` from the bucket; False if it is neither or absent."""
        key = self._data_key(path) or self._manifest_key(path)
        if key is None:
            return False
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        size = 0

        def fill(fd: int) -> bool:
            nonlocal size
            try:
                mtime = self.remote.get_to(key, fd)
            except Missing:
                return False
            size = os.fstat(fd).st_size
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            return True

        if not self._replace_with(path, fill):
            return False
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
        record, record_mtime = self.remote.get(index_key(run_id))
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
            if name.endswith(".json") and valid_run_id(name[:-5]):
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
    blob_prefix = rel_key(os.path.relpath(cache.blobs_dir, cache.root).split(os.sep)) + "/"
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
        remote.delete(index_key(run.id))
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
