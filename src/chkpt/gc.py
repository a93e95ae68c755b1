"""Keeps the store within its cap: evicts runs, deletes unreferenced blobs and stale files.

Eviction picks the least recently used runs first (a run is used when it is written or
loaded) and never touches a run whose writer is alive. Blobs are shared between runs, so a
run frees only the blobs no other run refers to.

Concurrency: `gc.lock` at the store root is held shared by a writer while it commits a
checkpoint and exclusively by gc while it decides and deletes, so gc never deletes a blob
that a checkpoint being committed refers to. Automatic eviction at a run's end only tries
the lock and skips if another process holds it: a script never waits for a cleanup.
"""

from __future__ import annotations

import fcntl
import os
import time

from chkpt.store import TMP_GRACE_SECONDS, Store, StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class StoreLock:
    """The store-wide gc lock: shared for writers, exclusive for gc."""

    def __init__(self, store: Store, exclusive: bool, blocking: bool = True) -> None:
        self.path = os.path.join(store.root, "gc.lock")
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self.blocking = blocking
        self.fd = -1

    def __enter__(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, self.mode | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
    """What a gc did or, with --dry-run, would do."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.freed = 0
        self.store_size_before = 0
        self.store_size_after = 0
        self.problems: list[str] = []
        self.orphans = 0


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
            except (StoreError, FileNotFoundError) as exc:
                report.problems.append(str(exc))
        runs.append(RunInfo(meta, blobs, last_used))
    return runs


def _removable(store: Store, run: RunInfo, now: float) -> bool:
    if store.is_live(run.id):
        return False
    if run.meta.get("status") == "incomplete":  # a run being created right now, or debris
        return now - run.last_used > TMP_GRACE_SECONDS
    return True


def collect(
    store: Store,
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    script: str | None = None,
    dry_run: bool = False,
    blocking: bool = True,
) -> Report | None:
    """Evict runs and sweep the store; None when `blocking` is False and gc is busy elsewhere."""
    report = Report()
    if not store.exists():
        return report
    with StoreLock(store, exclusive=True, blocking=blocking) as locked:
        if not locked:
            return None
        now = time.time()
        runs = survey(store, report)
        sizes = {digest: info.st_size for digest, info in store.blob_files()}
        report.store_size_before = sum(sizes.values())
        refcount: dict[str, int] = {}
        for run in runs:
            for digest in run.blobs:
                refcount[digest] = refcount.get(digest, 0) + 1

        def evict(run: RunInfo) -> None:
            freed = 0
            for digest in run.blobs:
                refcount[digest] -= 1
                if refcount[digest] == 0:
                    freed += sizes.get(digest, 0)
            report.freed += freed
            report.runs.append(dict(run.meta, freed=freed))
            if not dry_run:
                store.delete_run(run.id)

        candidates = sorted((r for r in runs if _removable(store, r, now)),
                            key=lambda r: r.last_used)
        remaining = []
        for run in candidates:
            too_old = older_than is not None and now - run.last_used > older_than
            of_script = script is None or _same_script(run.meta.get("script"), script)
            if of_script and (too_old or run.meta.get("status") in ("corrupt", "incomplete")):
                evict(run)
            else:
                remaining.append(run)
        if max_size is not None:
            size = report.store_size_before - report.freed
            for run in remaining:
                if size <= max_size:
                    break
                if script is None or _same_script(run.meta.get("script"), script):
                    before = report.freed
                    evict(run)
                    size -= report.freed - before
        report.orphans = _sweep(store, refcount, sizes, now, dry_run, report)
        report.store_size_after = report.store_size_before - report.freed
    return report


def _same_script(path: Any, wanted: str) -> bool:
    if not isinstance(path, str):
        return False
    return path == os.path.abspath(wanted) or os.path.basename(path) == wanted


def _sweep(store: Store, refcount: dict[str, int], sizes: dict[str, int], now: float,
           dry_run: bool, report: Report) -> int:
    """Delete blobs nothing refers to (past the grace period) and stale temporary files."""
    removed = 0
    for digest, size in sizes.items():
        if refcount.get(digest, 0) > 0:
            continue
        path = store.blob_path(digest)
        try:
            young = now - os.path.getmtime(path) < TMP_GRACE_SECONDS
        except OSError:
            continue
        if young and digest not in refcount:
            continue  # written by a checkpoint not yet committed
        removed += 1
        if digest not in refcount:
            report.freed += size
        if not dry_run:
            try:
                os.unlink(path)
            except OSError:
                pass
    try:
        leftovers = os.listdir(store.tmp_dir)
    except OSError:
        leftovers = []
    for name in leftovers:
        path = os.path.join(store.tmp_dir, name)
        try:
            if now - os.path.getmtime(path) > TMP_GRACE_SECONDS and not dry_run:
                os.unlink(path)
        except OSError:
            pass
    return removed


def enforce_cap(store: Store, max_size: int, *, blocking: bool) -> Report | None:
    """Bring the store under `max_size` if it is over; cheap when it is not."""
    total = sum(info.st_size for _, info in store.blob_files())
    if total <= max_size:
        return None
    return collect(store, max_size=max_size, blocking=blocking)
