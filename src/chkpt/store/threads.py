"""The store's worker threads: one pool for hashing, writing and transfers, and the wait for a
finished thread's OS thread to be gone.

Helpers are bare `_thread`s (no `threading` state the program could see) with every signal
blocked, so signals sent to the process keep reaching its main thread; each has ended, its OS
thread gone, before `parallel` returns, so a fork right after sees the threads it would see
without chkpt (Python warns about forking a multi-threaded process).
"""

from __future__ import annotations

import _signal
import _thread
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

def wait_gone(native_id: int) -> None:
    """Wait until a thread that finished its work has ended (Linux shows it in /proc)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and os.path.exists(f"/proc/self/task/{native_id}"):
        time.sleep(0.0005)


def parallel(function: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
    """[function(item) for item in items], by up to `workers` threads, the calling one among
    them; after a failure no new item starts, and the first error is raised once all ended."""
    count = min(workers, len(items))
    if count < 2:
        return [function(item) for item in items]
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    guard = _thread.allocate_lock()
    next_item = [0]

    def work() -> None:
        while not errors:
            with guard:
                index = next_item[0]
                next_item[0] += 1
            if index >= len(items):
                return
            try:
                results[index] = function(items[index])
            except BaseException as exc:
                errors.append(exc)

    def helper(done: Any, native_id: list[int]) -> None:
        native_id.append(_thread.get_native_id())
        try:
            _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
            work()
        finally:
            done.release()

    helpers: list[tuple[Any, list[int]]] = []
    for _ in range(count - 1):
        done = _thread.allocate_lock()
        done.acquire()
        native_id: list[int] = []
        try:
            _thread.start_new_thread(helper, (done, native_id))
        except RuntimeError:  # at interpreter shutdown (an exit checkpoint): no new threads
            break
        helpers.append((done, native_id))
    try:
        work()
    finally:
        for done, native_id in helpers:
            done.acquire()
            wait_gone(native_id[0])
    if errors:
        raise errors[0]
    return results
