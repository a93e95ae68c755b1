"""Keeps the store within its cap: surveys it, plans with eviction.py, and deletes.

Concurrency: the store lock is held shared by a writer while it commits a checkpoint and
exclusively here while gc decides and deletes, so gc never deletes a blob that a checkpoint
being committed refers to. Automatic eviction only tries the lock and skips if another
process holds it: a script never waits for a cleanup.

Pinned runs (`runs/<id>/pinned`) are never evicted.

What a run refers to is read from its checkpoint files themselves, never from the summary its
record keeps for listing: gc deletes only data that no readable checkpoint file (and no run
record) refers to, whatever a summary says.

Cost: the automatic check reads the store's running size estimate (one small file), not a stat
of every blob; the full survey runs only when the estimate is over the cap or was last measured
more than RESCAN_SECONDS ago. The survey reads each run's record and its manifests.
"""

from __future__ import annotations

import time

from chkpt import eviction, records
from chkpt.store import Damaged, Store, StoreError, is_script

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RESCAN_SECONDS = 86400.0  # measure the store (and sweep leftovers) at least daily
LOW_WATER = 0.9  # automatic eviction goes down to this fraction of the cap, not just under it


class Report:
    """What a gc did or, with --dry-run, would do."""

    def __init__(self, plan: eviction.Plan | None = None, problems: list[str] | None = None) -> None:
        self.runs: list[dict[str, Any]] = [dict(run.meta, freed=freed) for run, freed in plan.runs] if plan else []
        self.kept: list[dict[str, Any]] = [run.meta for run in plan.kept] if plan else []  # by their pins
        self.freed = plan.freed if plan else 0
        self.store_size_before = plan.size_before if plan else 0
        self.store_size_after = plan.size_after if plan else 0
        self.problems = problems or []
        self.later = 0  # bytes no run refers to any more that a later gc deletes (a bucket's grace)
        self.later_from: float | None = None  # when all of them can go


def survey(store: Store, problems: list[str]) -> tuple[list[eviction.RunState], list[tuple[int, int]]]:
    """Every run with the blobs its record and its readable manifests refer to, and the (run,
    index) of damaged manifests.

    A run whose record or checkpoint list cannot be read, or none of whose manifests can, is
    "damaged"; a manifest that cannot be read is reported and listed for deletion. Nothing
    stops the survey.
    """
    runs = []
    damaged_manifests = []
    for run_id in store.run_ids():
        live = store.is_live(run_id)
        last_used = store.run_last_used(run_id)
        if last_used is None:
            continue  # deleted meanwhile
        meta: dict[str, Any] = {"id": run_id, "script": None}
        try:
            meta = store.read_run(run_id)
            last_used = max(last_used, meta.get("ended") or 0)
            mtimes = store.checkpoint_mtimes(run_id)
        except FileNotFoundError:
            runs.append(eviction.RunState(meta, "incomplete", last_used, live, {}))
            continue
        except StoreError as exc:
            problems.append(str(exc))
            runs.append(eviction.RunState(meta, "damaged", last_used, live, {}))
            continue
        blobs = records.run_blobs(meta)
        readable = damaged = 0
        for index in mtimes:
            try:
                blobs.update(records.manifest_blobs(store.read_checkpoint(run_id, index)))
                readable += 1
            except FileNotFoundError:
                continue  # thinned meanwhile
            except Damaged as exc:
                problems.append(str(exc))
                damaged_manifests.append((run_id, index))
                damaged += 1
            except StoreError as exc:
                problems.append(str(exc))
        # a run none of whose checkpoints can be read holds nothing but its damage
        status = "damaged" if damaged and not readable else meta["status"]
        runs.append(eviction.RunState(meta, status, last_used, live, blobs, pinned=store.is_pinned(run_id)))
    return runs, damaged_manifests


def collect(store: Store, *, max_size: int | None = None, older_than: float | None = None,
            script: str | None = None, dry_run: bool = False, blocking: bool = True,
            remove: set[str] | None = None) -> Report | None:
    """Evict runs and sweep the store (see eviction.py); None when not `blocking` and gc is busy
    elsewhere. `remove` deletes exactly these runs instead of evicting (`chkpt rm`)."""
    if not store.run_ids() and not store.exists():  # listing refuses a store it may not touch
        return Report()
    with store.lock(exclusive=True, blocking=blocking) as locked:
        if not locked:
            return None
        problems: list[str] = []
        runs, damaged_manifests = survey(store, problems)
        blobs, debris = store.blobs(), store.debris()
        problems.extend(f"{store.path(key)} is not a blob file (removed by gc)" for key in debris)
        leftovers = [(item.name, item.size, item.mtime) for item in store.leftovers()]
        problems.extend(eviction.missing_blobs(runs, blobs))
        of_script = None if script is None else (lambda run: is_script(run.meta.get("script"), script))
        plan = eviction.plan(runs, blobs, leftovers, now=time.time(), max_size=max_size,
                             older_than=older_than, of_script=of_script, remove=remove)
        if not dry_run:
            # manifests before the blobs they refer to, so a cut-short gc leaves no dangling one
            for run_id, index in damaged_manifests:
                store.delete_checkpoint(run_id, index)
            for run, _ in plan.runs:
                store.delete_run(run.id)
            for digest in plan.blobs:
                store.delete_blob(digest)
            for name in plan.leftovers:
                store.remove_leftover(name)
            for key in debris:
                store.delete(key)
            gone = set(plan.blobs)
            store.reset_usage(sum(size for digest, (size, _) in blobs.items() if digest not in gone))
    return Report(plan, problems)


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
