"""Keeps the store within its cap: evicts runs, deletes unreferenced blobs and stale files.

Eviction picks the least recently used runs first (a run is used when it is written or
loaded) and never touches a run whose writer is alive. Blobs are shared between runs, so a
run frees only the blobs no other run refers to. Leftovers of killed processes are swept:
files in tmp/ and run directories without run.json once older than the grace period,
blobs no manifest refers to (after a short grace, see BLOB_GRACE_SECONDS), and manifests
that cannot be parsed.

Concurrency: `gc.lock` at the store root is held shared by a writer while it commits a
checkpoint and exclusively by gc while it decides and deletes, so gc never deletes a blob
that a checkpoint being committed refers to. Automatic eviction only tries the lock and
skips if another process holds it: a script never waits for a cleanup.

Cost: the automatic check reads the running size estimate in `<root>/usage` (one small
file), not a stat of every blob; the full survey runs only when the estimate is over the
cap or was last measured more than RESCAN_SECONDS ago.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time

from chkpt.store import TMP_GRACE_SECONDS, Store, StoreError, hold_lock, is_script, release_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Every writer holds the shared lock from its first blob to its manifest, so under the
# exclusive lock an unreferenced blob is garbage: the short grace only covers filesystems
# where flock does not lock (some network mounts). It also keeps what thinning just
# released from counting as freed at once; the cap estimate is re-measured by each gc.
BLOB_GRACE_SECONDS = 60.0
RESCAN_SECONDS = 86400.0  # measure the store (and sweep leftovers) at least daily
LOW_WATER = 0.9  # automatic eviction goes down to this fraction of the cap, not just under it


class StoreLock:
    """The store-wide gc lock: shared for writers, exclusive for gc.

    Used as a context manager (`with StoreLock(...) as locked`) or, by a checkpoint handed
    to a background thread, through `acquire()` and `release()`.
    """

    def __init__(self, store: Store, exclusive: bool, blocking: bool = True) -> None:
        self.path = os.path.join(store.root, "gc.lock")
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self.blocking = blocking
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when non-blocking and another process holds it."""
        self.fd = hold_lock(self.path, self.mode, self.blocking)
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            release_lock(self.fd)
            self.fd = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class RunInfo:
    """What gc knows of one run: its metadata, blobs and when it was last used."""

    def __init__(self, meta: dict[str, Any], blobs: dict[str, int], last_used: float) -> None:
        self.meta = meta
        self.blobs = blobs
        self.last_used = last_used

    @property
    def id(self) -> str:
        return str(self.meta["id"])


class Report:
    """What a gc did or, with --dry-run, would do. Sizes count blobs and leftovers in tmp/."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.freed = 0
        self.store_size_before = 0
        self.store_size_after = 0
        self.problems: list[str] = []
        self.orphans = 0  # unreferenced blobs removed
        self.leftovers = 0  # stale files and directories removed from tmp/
        self.corrupt_manifests: list[str] = []


def checkpoint_blobs(manifest: dict[str, Any]) -> dict[str, int]:
    """hash → size of every blob a checkpoint manifest refers to."""
    blobs: dict[str, int] = {}
    for variable in manifest.get("variables", []):
        parts = [variable.get("pickle", {}), *variable.get("buffers", [])]
        for part in parts:
            if isinstance(part, dict) and "hash" in part:
                blobs[part["hash"]] = int(part.get("size", 0))
    return blobs


def survey(store: Store, report: Report) -> list[RunInfo]:
    """Every run with its blobs; unreadable runs and manifests are reported, not fatal."""
    runs = []
    for run_id in store.run_ids():
        run_json = os.path.join(store.run_dir(run_id), "run.json")
        try:
            meta = store.read_run(run_id)
            last_used = max(os.path.getmtime(run_json), float(meta.get("ended") or 0))
        except FileNotFoundError:
            meta = {"id": run_id, "status": "incomplete", "script": None}
            try:
                last_used = os.path.getmtime(store.run_dir(run_id))
            except OSError:
                continue
        except StoreError as exc:
            report.problems.append(str(exc))
            meta = {"id": run_id, "status": "corrupt", "script": None}
            last_used = 0.0
        blobs: dict[str, int] = {}
        source = meta.get("source")
        if isinstance(source, dict) and "hash" in source:
            blobs[source["hash"]] = int(source.get("size", 0))
        for index in store.checkpoint_indexes(run_id):
            try:
                blobs.update(checkpoint_blobs(store.read_checkpoint(run_id, index)))
            except FileNotFoundError:
                continue  # thinned meanwhile
            except (StoreError, ValueError, TypeError, AttributeError) as exc:
                report.problems.append(str(exc) if isinstance(exc, StoreError) else
                                       f"{store.checkpoint_path(run_id, index)} is corrupt ({exc})")
                report.corrupt_manifests.append(store.checkpoint_path(run_id, index))
        runs.append(RunInfo(meta, blobs, last_used))
    return runs


def _removable(store: Store, run: RunInfo, now: float) -> bool:
    if store.is_live(run.id):
        return False
    if run.meta.get("status") == "incomplete":  # a run being created right now, or debris
        return now - run.last_used > TMP_GRACE_SECONDS
    return True


def _tmp_entries(store: Store) -> list[tuple[str, int, float]]:
    """(path, bytes, mtime) of what sits in tmp/."""
    entries = []
    try:
        names = os.listdir(store.tmp_dir)
    except OSError:
        return entries
    for name in names:
        path = os.path.join(store.tmp_dir, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        size = info.st_size
        if os.path.isdir(path):  # a deleted run's directory, if its deletion was cut short
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        entries.append((path, size, info.st_mtime))
    return entries


def collect(
    store: Store,
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    script: str | None = None,
    dry_run: bool = False,
    blocking: bool = True,
) -> Report | None:
    """Evict runs and sweep the store; None when `blocking` is False and gc is busy elsewhere.

    Runs go when they are older than `older_than` (seconds since last use), corrupt, or
    debris of a killed start, then least recently used first while the store is over
    `max_size`; `script` limits eviction to that script's runs. Leftovers are swept always.
    """
    report = Report()
    if not store.exists():
        return report
    with StoreLock(store, exclusive=True, blocking=blocking) as locked:
        if not locked:
            return None
        now = time.time()
        runs = survey(store, report)
        blobs = {digest: (info.st_size, info.st_mtime) for digest, info in store.blob_files()}
        tmp = _tmp_entries(store)
        report.store_size_before = sum(s for s, _ in blobs.values()) + sum(s for _, s, _ in tmp)
        refcount: dict[str, int] = {}
        for run in runs:
            for digest in run.blobs:
                refcount[digest] = refcount.get(digest, 0) + 1
        _check_references(runs, blobs, report)

        # Leftovers first: what goes anyway counts before any run is evicted for the cap.
        orphans = [d for d, (_, mtime) in blobs.items()
                   if d not in refcount and now - mtime > BLOB_GRACE_SECONDS]
        stale = [(path, size) for path, size, mtime in tmp if now - mtime > TMP_GRACE_SECONDS]
        report.orphans, report.leftovers = len(orphans), len(stale)
        report.freed = sum(blobs[d][0] for d in orphans) + sum(size for _, size in stale)
        freed_blobs = list(orphans)
        evicted: list[RunInfo] = []

        def evict(run: RunInfo) -> None:
            freed = 0
            for digest in run.blobs:
                refcount[digest] -= 1
                if refcount[digest] == 0 and digest in blobs:
                    freed += blobs[digest][0]
                    freed_blobs.append(digest)
            report.freed += freed
            report.runs.append(dict(run.meta, freed=freed))
            evicted.append(run)

        candidates = sorted((r for r in runs if _removable(store, r, now)), key=lambda r: r.last_used)
        remaining = []
        for run in candidates:
            too_old = older_than is not None and now - run.last_used > older_than
            of_script = script is None or is_script(run.meta.get("script"), script)
            if of_script and (too_old or run.meta.get("status") in ("corrupt", "incomplete")):
                evict(run)
            else:
                remaining.append(run)
        if max_size is not None:
            for run in remaining:
                if report.store_size_before - report.freed <= max_size:
                    break
                if script is None or is_script(run.meta.get("script"), script):
                    evict(run)
        report.store_size_after = report.store_size_before - report.freed
        if not dry_run:
            _delete(store, evicted, freed_blobs, stale, report)
            gone = set(freed_blobs)
            store.reset_usage(sum(size for d, (size, _) in blobs.items() if d not in gone))
    return report


def _check_references(runs: list[RunInfo], blobs: dict[str, tuple[int, float]], report: Report) -> None:
    """Report blobs that manifests refer to but that are missing or of the wrong size."""
    for run in runs:
        for digest, size in run.blobs.items():
            found = blobs.get(digest)
            if found is None:
                report.problems.append(f"run {run.id} refers to blob {digest}, which is missing")
            elif found[0] != size:
                report.problems.append(f"run {run.id} refers to blob {digest}, which is truncated "
                                       f"({found[0]} of {size} bytes)")


def _delete(store: Store, evicted: list[RunInfo], freed_blobs: list[str],
            stale: list[tuple[str, int]], report: Report) -> None:
    """Manifests go before the blobs they refer to, so a cut-short gc leaves no dangling one."""
    for path in report.corrupt_manifests:
        try:
            os.unlink(path)
        except OSError:
            pass
    for run in evicted:
        store.delete_run(run.id)
    for digest in freed_blobs:
        try:
            os.unlink(store.blob_path(digest))
        except OSError:
            pass
    for path, _ in stale:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def enforce_cap(store: Store, max_size: int, *, blocking: bool) -> Report | None:
    """Bring the store under `max_size` if it is over; reads one small file when it is not.

    Over the cap by the estimate, runs are evicted down to LOW_WATER of it, so that a store
    hovering at its cap is not surveyed after every run. An estimate that is missing or
    older than RESCAN_SECONDS is replaced by a full survey (which also sweeps leftovers).
    """
    usage = store.read_usage()
    if usage is None or time.time() - usage[1] > RESCAN_SECONDS:
        return collect(store, max_size=max_size, blocking=blocking)
    if usage[0] <= max_size:
        return None
    return collect(store, max_size=int(max_size * LOW_WATER), blocking=blocking)
