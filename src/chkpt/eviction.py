"""Which runs and files a gc removes: a pure plan over what the store holds.

Runs go when they are damaged, debris of a start cut short, or older than `older_than`
(seconds since last use); then, least recently used first, while the store is over
`max_size`. A live run (its writer still holds its lock) and a pinned run never go; the plan
names the pinned runs that would have gone otherwise. `remove` names runs the user deletes
by hand (`chkpt rm`). `script` limits eviction
to one script's runs. Blobs are shared between runs, so a run frees only the blobs no
remaining run refers to. Unreferenced blobs and leftovers of killed processes go once older
than their grace periods, before any run is evicted for the cap.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# Every writer holds the shared lock from its first blob to its manifest, so under the
# exclusive lock an unreferenced blob is garbage: the short grace only covers filesystems
# where flock does not lock (some network mounts).
BLOB_GRACE_SECONDS = 60.0
TMP_GRACE_SECONDS = 3600.0  # files being written and starts cut short are debris after this


class RunState:
    """What the planner knows of one run."""

    __slots__ = ("blobs", "id", "last_used", "live", "meta", "pinned", "status")

    def __init__(self, meta: dict[str, Any], status: str, last_used: float, live: bool,
                 blobs: dict[str, int], pinned: bool = False) -> None:
        self.meta = meta
        self.id: str = meta["id"]
        self.status = status  # a record's status, or "damaged" / "incomplete" (no record yet)
        self.last_used = last_used
        self.live = live
        self.blobs = blobs  # hash → size of every blob its record and manifests refer to
        self.pinned = pinned


class Plan:
    """What a gc removes, and the sizes before and after. Sizes count blobs and leftovers."""

    def __init__(self) -> None:
        self.runs: list[tuple[RunState, int]] = []  # evicted runs, each with the bytes it frees
        self.blobs: list[str] = []  # blob hashes to delete
        self.leftovers: list[str] = []  # names in tmp/ to delete
        self.kept: list[RunState] = []  # pinned runs that would have been evicted
        self.size_before = 0
        self.freed = 0

    @property
    def size_after(self) -> int:
        return self.size_before - self.freed


def plan(runs: list[RunState], blobs: dict[str, tuple[int, float]], leftovers: list[tuple[str, int, float]],
         *, now: float, max_size: int | None = None, older_than: float | None = None,
         of_script: Callable[[RunState], bool] | None = None, remove: set[str] | None = None,
         grace: float = BLOB_GRACE_SECONDS) -> Plan:
    """The plan for a store holding `runs`, `blobs` (hash → (size, mtime)) and `leftovers`
    ((name, size, mtime) in tmp/); unreferenced blobs younger than `grace` seconds stay."""
    result = Plan()
    result.size_before = sum(size for size, _ in blobs.values()) + sum(size for _, size, _ in leftovers)
    refcount: dict[str, int] = {}
    for run in runs:
        for digest in run.blobs:
            refcount[digest] = refcount.get(digest, 0) + 1

    orphans = [d for d, (_, mtime) in blobs.items() if d not in refcount and now - mtime > grace]
    stale = [(name, size) for name, size, mtime in leftovers if now - mtime > TMP_GRACE_SECONDS]
    result.blobs.extend(orphans)
    result.leftovers.extend(name for name, _ in stale)
    result.freed = sum(blobs[d][0] for d in orphans) + sum(size for _, size in stale)

    def evict(run: RunState) -> None:
        freed = 0
        for digest in run.blobs:
            refcount[digest] -= 1
            if refcount[digest] == 0 and digest in blobs:
                freed += blobs[digest][0]
                result.blobs.append(digest)
        result.freed += freed
        result.runs.append((run, freed))

    def removable(run: RunState) -> bool:
        if run.live:
            return False
        if run.status == "incomplete":  # a run being created right now, or debris
            return now - run.last_used > TMP_GRACE_SECONDS
        return True

    def keep_pinned(run: RunState) -> bool:
        if run.pinned and run not in result.kept:
            result.kept.append(run)
        return run.pinned

    candidates = sorted((r for r in runs if removable(r)), key=lambda r: r.last_used)
    remaining = []
    for run in candidates:
        chosen = of_script is None or of_script(run)
        too_old = older_than is not None and now - run.last_used > older_than
        if remove is not None and run.id in remove:
            evict(run)
        elif remove is None and chosen and (too_old or run.status in ("damaged", "incomplete")):
            if not keep_pinned(run):
                evict(run)
        else:
            remaining.append(run)
    if max_size is not None and remove is None:
        for run in remaining:
            if result.size_after <= max_size:
                break
            if (of_script is None or of_script(run)) and not keep_pinned(run):
                evict(run)
    return result


def missing_blobs(runs: list[RunState], blobs: dict[str, tuple[int, float]]) -> list[str]:
    """A sentence for each blob a run refers to that is missing or of the wrong size."""
    problems = []
    for run in runs:
        for digest, size in run.blobs.items():
            found = blobs.get(digest)
            if found is None:
                problems.append(f"run {run.id} refers to blob {digest}, which is missing")
            elif found[0] != size:
                problems.append(f"run {run.id} refers to blob {digest}, which is truncated "
                                f"({found[0]} of {size} bytes)")
    return problems
