"""The eviction plan: least recently used runs first, live runs never, shared blobs kept,
leftovers and orphans only after their grace periods."""

from __future__ import annotations

from chkpt.eviction import BLOB_GRACE_SECONDS, TMP_GRACE_SECONDS, RunState, plan

NOW = 1_000_000.0
MB = 1_000_000


def run(run_id: str, age: float, blobs: dict[str, int], status: str = "finished", live: bool = False,
        script: str = "/w/job.py", pinned: bool = False) -> RunState:
    return RunState({"id": run_id, "script": script}, status, NOW - age, live, blobs, pinned=pinned)


def stored(*names: str, size: int = MB, age: float = 3600) -> dict[str, tuple[int, float]]:
    return {name: (size, NOW - age) for name in names}


def evicted(result) -> list[str]:
    return [state.id for state, _ in result.runs]


def test_least_recently_used_runs_go_first_until_under_the_cap():
    runs = [run("new", 10, {"a": MB}), run("old", 300, {"b": MB}), run("mid", 100, {"c": MB})]
    result = plan(runs, stored("a", "b", "c"), [], now=NOW, max_size=MB)
    assert evicted(result) == ["old", "mid"]
    assert (result.size_before, result.freed, result.size_after) == (3 * MB, 2 * MB, MB)
    assert sorted(result.blobs) == ["b", "c"]


def test_a_live_run_is_never_evicted_even_when_it_is_the_oldest():
    runs = [run("writing", 9999, {"a": MB}, status="running", live=True), run("done", 10, {"b": MB})]
    result = plan(runs, stored("a", "b"), [], now=NOW, max_size=0)
    assert evicted(result) == ["done"]


def test_a_blob_shared_with_a_remaining_run_is_not_freed():
    runs = [run("old", 300, {"shared": MB, "own": MB}), run("new", 10, {"shared": MB})]
    result = plan(runs, stored("shared", "own"), [], now=NOW, max_size=MB)
    assert evicted(result) == ["old"]
    assert result.blobs == ["own"] and result.runs[0][1] == MB


def test_damaged_runs_always_go_and_runs_being_created_only_after_the_grace():
    runs = [run("broken", 1, {}, status="damaged"), run("starting", 5, {}, status="incomplete"),
            run("debris", TMP_GRACE_SECONDS + 5, {}, status="incomplete"), run("fine", 1, {"a": MB})]
    result = plan(runs, stored("a"), [], now=NOW)
    assert sorted(evicted(result)) == ["broken", "debris"]


def test_older_than_and_script_pick_which_runs_go():
    runs = [run("a-old", 9000, {"x": MB}, script="/w/a.py"), run("b-old", 9000, {"y": MB}, script="/w/b.py"),
            run("a-new", 10, {"z": MB}, script="/w/a.py")]
    result = plan(runs, stored("x", "y", "z"), [], now=NOW, older_than=3600,
                  of_script=lambda state: state.meta["script"] == "/w/a.py")
    assert evicted(result) == ["a-old"]


def test_orphan_blobs_and_leftovers_go_only_once_older_than_their_grace():
    blobs = {**stored("young", age=BLOB_GRACE_SECONDS / 2), **stored("orphan", age=BLOB_GRACE_SECONDS * 2),
             **stored("used", age=10 * BLOB_GRACE_SECONDS)}
    leftovers = [("123-abc", 500, NOW - 10), ("456-def", 700, NOW - 2 * TMP_GRACE_SECONDS)]
    result = plan([run("r", 10, {"used": MB})], blobs, leftovers, now=NOW)
    assert result.blobs == ["orphan"] and result.leftovers == ["456-def"]
    assert result.freed == MB + 700 and evicted(result) == []


def test_what_goes_anyway_counts_before_runs_are_evicted_for_the_cap():
    blobs = {**stored("a"), **stored("orphan", age=2 * BLOB_GRACE_SECONDS)}
    result = plan([run("only", 10, {"a": MB})], blobs, [], now=NOW, max_size=MB)
    assert evicted(result) == [] and result.size_after == MB


def test_a_plan_without_a_cap_keeps_every_healthy_run():
    runs = [run(f"r{i}", i * 1000, {f"b{i}": MB}) for i in range(5)]
    result = plan(runs, stored(*(f"b{i}" for i in range(5))), [], now=NOW)
    assert evicted(result) == [] and result.freed == 0


def test_a_pinned_run_is_never_evicted_and_the_plan_names_it():
    runs = [run("pinned", 9999, {"a": MB}, pinned=True), run("old", 300, {"b": MB}), run("new", 10, {"c": MB})]
    result = plan(runs, stored("a", "b", "c"), [], now=NOW, max_size=0)
    assert evicted(result) == ["old", "new"] and [r.id for r in result.kept] == ["pinned"]
    aged = plan(runs, stored("a", "b", "c"), [], now=NOW, older_than=100)
    assert evicted(aged) == ["old"] and [r.id for r in aged.kept] == ["pinned"]
    under = plan(runs, stored("a", "b", "c"), [], now=NOW, max_size=3 * MB)
    assert evicted(under) == [] and under.kept == []  # nothing would have gone: no pin kept anything


def test_removing_runs_by_hand_frees_only_what_no_other_run_shares():
    runs = [run("a", 10, {"shared": MB, "own": MB}), run("b", 20, {"shared": MB})]
    result = plan(runs, stored("shared", "own"), [], now=NOW, max_size=0, remove={"a"})
    assert evicted(result) == ["a"] and result.blobs == ["own"] and result.freed == MB
