"""A shared store in a bucket, read from this machine: the store readers see, its gc, doctor's look.

Readers see the bucket through its read cache, with this machine's runs that are not in the
bucket yet (or not as they are now) read from its staging store, so a run just made is listed
while its upload waits (the endpoint down, a bad credential). Opening the store uploads
nothing: the uploader (`chkpt sync`, started by the runs themselves) does that.
docs/store-format.md ("Shared store") has the layout, the leases and gc's rules.
"""

from __future__ import annotations

import os
import secrets
import time

from chkpt import cleanup, eviction, fmt
from chkpt.store import RemoteError, Store, is_script, layout
from chkpt.store.cache import LIVE, ReadCache, Staged
from chkpt.store.objects import ObjectBackend, describe
from chkpt.store.threads import parallel
from chkpt.sync import GRACE, WORKERS, Local

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def waiting_text(url: str, waiting: int, uploading: bool) -> str:
    """What this machine has not uploaded yet, and what uploads it: one story for ls, doctor and sync."""
    if not waiting:
        return f"nothing waiting for upload: {url} has every run of this machine"
    who = "an upload of this machine is under way" if uploading else "`chkpt sync` uploads them"
    return f"{fmt.plural(waiting, 'run')} of this machine waiting for upload to {url} ({who})"


def waiting_runs(store: Store) -> list[str]:
    """The runs of a shared store read from this machine's staging store: not uploaded yet (or not
    as they are now)."""
    return list(store.backend.waiting) if isinstance(store.backend, Staged) else []


def waiting_line(store: Store) -> str | None:
    """`waiting_text` for a shared store with runs waiting for upload, else None."""
    waiting = waiting_runs(store)
    return waiting_text(store.location, len(waiting), store.backend.uploading) if waiting else None


def reading_store(url: str, cache_size: int, *, warn: Callable[[str], None]) -> Store:
    """The bucket as this machine sees it: the read cache brought up to date, and this machine's
    runs waiting for upload read from its staging store. Offline, the cache as it is, with one
    warning."""
    local = Local(url)
    local.make()
    cache = ReadCache(local.cache, ObjectBackend(url), cache_size, local.home)
    waiting = local.pending()
    try:
        cache.refresh()
    except RemoteError as exc:
        also = f" and {fmt.plural(len(waiting), 'run')} waiting for upload" if waiting else ""
        warn(f"{exc}; showing this machine's cached copy{also}")
    return Store(Staged(local.staging.backend, cache, waiting, local.uploading()))


def check(url: str) -> list[tuple[str, bool, str]]:
    """`chkpt doctor`'s look at the bucket: its cloud and where its credentials come from, reachable
    and writable (a probe object written, read and deleted), the clock skew against the server's
    times, and this machine's pending uploads."""
    local = Local(url)
    bucket = ObjectBackend(url)
    checks: list[tuple[str, bool, str]] = [("cloud", True, describe(url, os.environ))]
    probe = layout.temporary(f"probe-{secrets.token_hex(2)}-")
    try:
        before = time.time()
        bucket.put_atomic(probe, [b"chkpt doctor probe\n"])
        after = time.time()
        there = bucket.stat(probe)
        bucket.delete(probe)
    except RemoteError as exc:
        checks.append(("bucket", False, str(exc)))
        return checks
    checks.append(("bucket", True, f"reachable and writable: {url}"))
    if there is not None:
        # the server's time of the upload, to its one-second precision, against ours
        skew = there.mtime - (before + after) / 2
        ok = abs(skew) < 60
        checks.append(("clock", ok, f"{abs(skew):.0f}s {'behind' if skew > 0 else 'ahead of'} the server"
                       + ("" if ok else f" (over 60 s: other machines may see live runs as killed after "
                                        f"{LIVE // 60:.0f} min, or take killed ones for live)")))
    checks.append(("uploads", True, waiting_text(url, len(local.pending()), local.uploading())))
    return checks


# -- gc of the bucket -----------------------------------------------------------------------------------

def collect(store: Store, *, max_size: int | None = None, older_than: float | None = None,
            script: str | None = None, dry_run: bool = False, remove: set[str] | None = None) -> cleanup.Report:
    """Evict runs from the bucket and delete the data no run refers to, without any lock.

    The data is listed before the run records are read, so data a run committed meanwhile is
    either seen as referenced or listed as young. Only data older than GRACE is deleted,
    evicted runs' included, and each is looked at again just before its deletion: a writer
    that finds an old object it refers to rewrites it first (see `sync._upload_data`); the rest
    goes at a later gc (`Report.later`). A run whose record says "running" and was rewritten
    within GRACE is never evicted. `remove` deletes exactly these runs instead (`chkpt rm`).
    """
    staged: Staged = store.backend
    cache = staged.cache
    bucket = cache.bucket
    blobs: dict[str, tuple[int, float]] = {}
    keys: dict[str, str] = {}
    for found in bucket.list(layout.BLOBS):
        name = layout.blob_name(found.key)
        if name is not None:
            blobs[name] = (found.size, found.mtime)
            keys[name] = found.key
    cache.refresh()
    # a writer silent for a while (one long C call) is still alive: gc gives it a day, not LIVE
    cache.lease = GRACE
    problems: list[str] = []
    runs, _damaged = cleanup.survey(store, problems)
    of_script = None if script is None else (lambda run: is_script(run.meta.get("script"), script))
    now = time.time()
    plan = eviction.plan(runs, blobs, [], now=now, max_size=max_size, older_than=older_than,
                         of_script=of_script, remove=remove, grace=GRACE)
    doomed = [name for name in plan.blobs if now - blobs[name][1] > GRACE]
    evicted = {run.id for run, _ in plan.runs}
    kept = {name for run in runs if run.id not in evicted for name in run.blobs}
    young = [name for name in blobs if name not in kept and now - blobs[name][1] <= GRACE]
    report = cleanup.Report(plan, problems)
    report.freed = sum(blobs[name][0] for name in doomed)
    report.store_size_after = report.store_size_before - report.freed
    report.later = sum(blobs[name][0] for name in young)
    report.later_from = max((blobs[name][1] + GRACE for name in young), default=None)
    uncounted_now, uncounted_later = set(doomed), set(young)
    for (run, _), meta in zip(plan.runs, report.runs, strict=True):  # what each evicted run frees, now and later
        now_part, later_part = uncounted_now & set(run.blobs), uncounted_later & set(run.blobs)
        meta["freed"] = sum(blobs[name][0] for name in now_part)
        meta["later"] = sum(blobs[name][0] for name in later_part)
        uncounted_now -= now_part
        uncounted_later -= later_part
    if dry_run:
        return report
    for run, _ in plan.runs:
        store.delete_run(run.id)

    def delete(name: str) -> None:
        there = bucket.stat(keys[name])
        if there is not None and time.time() - there.mtime > GRACE:
            bucket.delete(keys[name])

    parallel(delete, doomed, WORKERS)
    parallel(bucket.delete, _stale_manifests(cache, time.time()), WORKERS)
    return report


def _stale_manifests(cache: ReadCache, now: float) -> list[str]:
    """Manifests in the bucket that no index lists (thinned by their writer, or left by an upload
    that never reached its index), uploaded more than GRACE ago."""
    stale = []
    for found in cache.bucket.list(layout.RUNS):
        manifest = layout.parse_manifest(found.key)
        if manifest is not None and manifest[1] not in cache.indexes.get(manifest[0], ()) \
                and now - found.mtime > GRACE:
            stale.append(found.key)
    return stale
