"""chkpt's own threads stay out of sight of the program's monitoring tools, in-process."""

import _thread
import sys
from collections.abc import Callable

import pytest

from chkpt import unseen

TOOL = 4  # a tool id neither chkpt nor the profilers/debuggers claim by default


def _python_work_seen_by_a_tool_turned_on_after_the_start(start: Callable[[Callable[[], None]], None]) -> list[str]:
    """Start a thread by `start`, turn a PY_START tool on, then let the thread run Python code;
    the names of the thread's functions the tool saw."""
    go, done = _thread.allocate_lock(), _thread.allocate_lock()
    go.acquire()
    done.acquire()

    def helper_of_the_thread() -> None:
        pass

    def work_of_the_thread() -> None:
        go.acquire()  # the tool is on once this returns
        helper_of_the_thread()
        done.release()

    start(work_of_the_thread)
    monitoring = sys.monitoring
    seen: list[str] = []
    monitoring.use_tool_id(TOOL, "test")
    try:
        monitoring.register_callback(TOOL, monitoring.events.PY_START,
                                     lambda code, offset: seen.append(code.co_name))
        monitoring.set_events(TOOL, monitoring.events.PY_START)
        go.release()
        assert done.acquire(timeout=30)
    finally:
        monitoring.set_events(TOOL, 0)
        monitoring.free_tool_id(TOOL)
    return [name for name in seen if name.endswith("_of_the_thread")]


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="sys.monitoring is 3.12+")
def test_a_thread_of_chkpts_is_unseen_by_a_tool_that_comes_later():
    # chkpt's timer, or a checkpoint's background writing, runs on when the program turns a profiler on
    assert _python_work_seen_by_a_tool_turned_on_after_the_start(unseen.start_thread) == []


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="sys.monitoring is 3.12+")
def test_a_plain_thread_started_while_no_tool_is_on_is_seen_by_one_that_comes_later():
    # what chkpt's threads were before: the check above can fail
    assert "helper_of_the_thread" in _python_work_seen_by_a_tool_turned_on_after_the_start(
        lambda work: _thread.start_new_thread(work, ()))
