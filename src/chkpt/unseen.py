"""chkpt's own work, out of sight of the program's profilers, tracers and monitoring tools.

cProfile, coverage, debuggers and any `sys.monitoring` tool of the program see the Python code
of every thread while they are on, so chkpt's checkpoints, ticks and background writes would
show in their results. CPython keeps, per thread, a "tracing" count that it raises while it runs
a tool's own callback, so that the callback raises no events; chkpt raises it (through the C
API, `PyThreadState_EnterTracing`/`LeaveTracing`) around its work on the program's thread
(`run`), for good in its own threads (`start_thread`). Each is done from
inside a C-level iteration (`list(map(operator.call, steps))`), so that no event falls between
the steps: what a tool sees is a call or two of builtins (`list`, `map`), and none of chkpt's
code. A periodic checkpoint, taken in chkpt's own monitoring callback, is out of sight already.

A signal handler of the program that runs during a checkpoint is out of sight too. Where no
tool is on (no trace or profile function, no `sys.monitoring` tool but chkpt's), nothing is
done; chkpt's threads are hidden from their first instruction whatever the tools, since the
program may turn one on while they run (a checkpoint's background writing, the timer). The C
functions are reached through `_ctypes` alone, the first time they are needed (ctypes' own
module costs four times as much).
"""

import _thread
import functools
import operator
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_call_each = functools.partial(map, operator.call)
_api: "tuple[Any, ...] | None" = None


def _functions() -> "tuple[Any, ...] | None":
    """(the current thread's state, enter, leave, the interpreter's newest thread state): C
    functions of this module's own (ctypes.pythonapi's are the program's to configure); None
    where this Python does not offer them."""
    global _api
    if _api is None:
        try:
            import _ctypes

            class Pointer(_ctypes._SimpleCData):  # ctypes.c_void_p: returned as an int
                _type_ = "P"

            class Library:  # ctypes.PyDLL(None): the interpreter's own symbols
                _handle = _ctypes.dlopen(None, 0)

            class Function(_ctypes.CFuncPtr):  # called with the GIL held, errors checked
                _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_PYTHONAPI

            def function(name: str, restype: "Any", *argtypes: "Any") -> "Any":
                found = Function((name, Library))
                found.restype, found.argtypes = restype, argtypes
                return found

            get = function("PyThreadState_Get", Pointer)
            enter = function("PyThreadState_EnterTracing", None, Pointer)
            leave = function("PyThreadState_LeaveTracing", None, Pointer)
            newest = function("PyInterpreterState_ThreadHead", Pointer, Pointer)
            interpreter = function("PyInterpreterState_Get", Pointer)
        except (ImportError, AttributeError, OSError):
            _api = ()
            return None
        _api = get, enter, leave, functools.partial(newest, interpreter())
    return _api or None


def _watched() -> bool:
    """Whether a tool could see code that runs now in this thread or a new one: a trace or
    profile function of this thread, or a `sys.monitoring` tool (chkpt's own aside)."""
    monitoring = getattr(sys, "monitoring", None)  # 3.12 and later
    return sys.gettrace() is not None or sys.getprofile() is not None or (monitoring is not None and any(
        monitoring.get_tool(tool) not in (None, "chkpt") for tool in range(6)))


def run(work: "Callable[[], Any]") -> "Any":
    """work() on the calling thread, with no event of it reaching any tool; its exception is
    raised here."""
    api = _functions() if _watched() else None
    if api is None:
        return work()
    get, enter, leave, _ = api
    state = get()
    outcome: list[Any] = []
    entered: list[bool] = []  # whether, as far as C knows, the tracing state is still to be left

    def guarded() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # raised again below, once out of the tracing state
            outcome.append(_Raised(error))

    steps = (functools.partial(enter, state), functools.partial(entered.append, True), guarded,
             entered.clear, functools.partial(leave, state))
    try:
        list(_call_each(steps))
    finally:
        if entered:  # interrupted before it could catch anything (a signal handler's exception)
            leave(state)
    result = outcome[0] if outcome else None
    if type(result) is _Raised:
        raise result.error
    return result


def start_thread(work: "Callable[[], None]") -> None:
    """_thread.start_new_thread(work): a thread of chkpt's own, out of sight from its first
    instruction, whatever the tools now: the program may turn one on while the thread runs.
    `work` must not raise (its exception would be printed as unhandled).

    The new thread's state is made by `start_new_thread` in this thread, as the interpreter's
    newest, and the new thread first waits (in C) for this one to have raised its tracing count."""
    api = _functions()
    if api is None:
        _thread.start_new_thread(work, ())
        return
    _, enter, leave, newest = api
    gate = _thread.allocate_lock()
    gate.acquire()
    steps = [gate.acquire]  # the new thread's first step: wait for the rest of the list
    start = functools.partial(_thread.start_new_thread, list, (_call_each(steps),))
    _, state = list(_call_each((start, newest)))  # from C: no other thread can start one between the two
    steps += [functools.partial(enter, state), work, functools.partial(leave, state)]
    gate.release()


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
