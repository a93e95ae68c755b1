"""chkpt's own work, out of sight of the program's profilers, tracers and monitoring tools.

cProfile, coverage, debuggers and any `sys.monitoring` tool of the program see the Python code
of every thread while they are on; chkpt's checkpoints, ticks and background writes would show
in their results. CPython keeps, per thread, a "tracing" count that it raises while it runs a
tool's own callback, so that the callback's code raises no events: `run` raises it around
chkpt's work (through the C API, `PyThreadState_EnterTracing`/`LeaveTracing`), from inside one
C-level iteration, so that what a tool sees of it is a few calls to builtins (`map`, `list`) that
return, balanced, and none of chkpt's code. A periodic checkpoint, taken in chkpt's own
monitoring callback, is out of sight already.

Signal handlers of the program that run during that time (between two of chkpt's bytecodes)
are out of sight too. ctypes is imported the first time it is needed (a checkpoint, a tick).
"""

from __future__ import annotations

import functools
import operator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_api: tuple[Any, Any, Any] | None = None


def _functions() -> tuple[Any, Any, Any]:
    global _api
    if _api is None:
        import ctypes

        library = ctypes.PyDLL(None)  # its own function objects: ctypes.pythonapi's are the program's to configure
        get, enter, leave = (library.PyThreadState_Get, library.PyThreadState_EnterTracing,
                             library.PyThreadState_LeaveTracing)
        get.restype, get.argtypes = ctypes.c_void_p, []
        for function in (enter, leave):
            function.restype, function.argtypes = None, [ctypes.c_void_p]
        _api = get, enter, leave
    return _api


def steps(work: Callable[[], Any]) -> tuple[Callable[[], Any], ...] | None:
    """Calls that run `work()` out of sight in the calling thread when made in order from C,
    `list(map(operator.call, steps))` (so that no event falls between them); None where this
    Python does not offer it. `work` must not raise."""
    try:
        get, enter, leave = _functions()
    except (ImportError, AttributeError, OSError):  # no ctypes, or a Python without these calls
        return None
    state = get()
    return functools.partial(enter, state), work, functools.partial(leave, state)


def run(work: Callable[[], Any]) -> Any:
    """work(), with no event of it reaching any tool; its exception is raised here."""
    outcome: list[Any] = []
    entered: list[bool] = []

    def guarded() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # raised again below, once out of the tracing state
            outcome.append(_Raised(error))

    found = steps(guarded)
    if found is None:
        return work()
    enter, _, leave = found
    try:  # `entered` says, in C, whether the tracing state is to be left still
        list(map(operator.call, (enter, functools.partial(entered.append, True), guarded, entered.clear, leave)))
    finally:
        if entered:  # interrupted before it could catch anything (a signal handler's exception)
            leave()
    result = outcome[0] if outcome else None
    if type(result) is _Raised:
        raise result.error
    return result


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
