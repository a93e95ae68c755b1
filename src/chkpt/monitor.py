"""The sys.monitoring side of periodic checkpoints: LINE events armed only while one is due.

No event is enabled and no tool id is held between checkpoints. When one falls due, the
watch's timer thread reads the main thread's stack and calls `Monitor.request_safe_point`,
which claims a tool id and turns LINE events on for the user's code objects on that stack
(usercode.py says which; CPython re-instruments code that is already running, so a loop
running in the module frame is reached too). The next LINE event of that code on the main
thread calls back with its frame; events are switched off and the tool id freed before the
checkpoint is taken there, between two statements of the user's code.

Resume points: a due checkpoint first arms the module code, and the script's function the
module frame is calling (`main()`, unless a top-level loop calls it), and waits for a
statement boundary or the header of a loop between two iterations (told apart from the
loop's first entry by the instruction at f_lasti being FOR_ITER) in the body of either, so
that `chkpt resume` can restart there. A boundary that does not come within
BOUNDARY_PATIENCE seconds of lines there gives way to the next such line; when neither runs
a line until the next tick (an interval later; while nothing is saved yet the session
asks for it after BOUNDARY_PATIENCE) because the script is deep inside a function call, its
own or one of the user's modules', that tick also arms every user-code function on the
stack and the checkpoint is taken in one.

main()'s return: `call_at_return` sets one local PY_RETURN event on the code of the script's
main() (`main_call`, `main_frame`), with a tool id claimed at a tick inside it and freed at
its return to the module frame, where the session takes the "return" checkpoint.
"""

from __future__ import annotations

import _thread
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

_mon = sys.monitoring
_LINE = _mon.events.LINE
_PY_START = _mon.events.PY_START
_PY_RETURN = _mon.events.PY_RETURN
_PREFERRED_TOOL_IDS = (4, 3, 5, 2)
BOUNDARY_PATIENCE = 2.0


def claim_tool_id() -> int | None:
    """The first free of the preferred tool ids, now chkpt's; None when all are taken."""
    for tool_id in _PREFERRED_TOOL_IDS:
        if _mon.get_tool(tool_id) is None:
            try:
                _mon.use_tool_id(tool_id, "chkpt")
            except ValueError:  # taken by another thread in between
                continue
            return tool_id
    return None


def free_tool_id(tool_id: int, codes: list[CodeType]) -> None:
    """Switch off every event chkpt set and give the id back (events first: gh-111963)."""
    for code in codes:
        _mon.set_local_events(tool_id, code, 0)
    _mon.set_events(tool_id, 0)
    _mon.register_callback(tool_id, _LINE, None)
    _mon.register_callback(tool_id, _PY_START, None)
    _mon.register_callback(tool_id, _PY_RETURN, None)
    if _mon.get_tool(tool_id) == "chkpt":
        _mon.free_tool_id(tool_id)


def watch_for_main_start(main_globals: dict, on_main_start: Callable[[CodeType], None]) -> bool:
    """Call `on_main_start(code)` when the code run in __main__'s namespace starts (for
    `python -m`); the tool id is held only until then. False when no id is free."""
    tool = claim_tool_id()
    if tool is None:
        return False

    def on_start(code: CodeType, offset: int) -> object:
        if code.co_name == "<module>" and sys._getframe(1).f_globals is main_globals:
            free_tool_id(tool, [])
            on_main_start(code)
        return _mon.DISABLE

    _mon.register_callback(tool, _PY_START, on_start)
    _mon.set_events(tool, _PY_START)
    return True


def main_call(source: bytes) -> tuple[str, int, int] | None:
    """The script's main(): the top-level function of the script that its last statement (or
    the last of a last `if __name__ == "__main__":` block) calls once (`main()`,
    `sys.exit(main())`, `raise SystemExit(main())`, `result = main()`), with that statement's
    first and last lines; None when the script ends otherwise (a loop may call it again)."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    if not tree.body:
        return None
    last = tree.body[-1]
    if isinstance(last, ast.If) and last.body and not last.orelse:
        last = last.body[-1]
    if not isinstance(last, ast.Expr | ast.Assign | ast.AnnAssign | ast.Raise):
        return None
    functions = {s.name for s in tree.body if isinstance(s, ast.FunctionDef)}
    called = [n.func.id for n in ast.walk(last)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions]
    if len(called) != 1:
        return None
    return called[0], last.lineno, last.end_lineno or last.lineno


def main_frame(frame: FrameType | None, main_globals: dict, call: tuple[str, int, int]) -> FrameType | None:
    """The frame of the script's main() (`main_call`) on a stack, when the module frame is
    running the statement that calls it; else None."""
    name, first, last = call
    inner = None
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            if (inner is not None and inner.f_globals is main_globals and inner.f_code.co_qualname == name
                    and first <= frame.f_lineno <= last):
                return inner
            return None
        inner, frame = frame, frame.f_back
    return None


def call_at_return(code: CodeType, main_thread: int, main_globals: dict,
                   callback: Callable[[FrameType], None]) -> Callable[[], None] | None:
    """Call `callback(frame)` once, on the main thread, when a call of `code` returns to the
    script's module frame, with the returning frame (a PY_RETURN event of `code` alone; the
    tool id is freed before the call). Returns what cancels it, or None when no tool id is free
    or the event could not be set."""
    tool = claim_tool_id()
    if tool is None:
        return None
    pending = [True]
    lock = _thread.allocate_lock()

    def cancel() -> None:
        with lock:
            if pending:
                pending.clear()
                free_tool_id(tool, [code])

    def on_return(returning: CodeType, offset: int, value: object) -> object:
        frame = sys._getframe(1)
        caller = frame.f_back
        if (_thread.get_ident() == main_thread and pending and caller is not None
                and caller.f_globals is main_globals and caller.f_code.co_name == "<module>"):
            cancel()
            callback(frame)
        return None

    try:
        _mon.register_callback(tool, _PY_RETURN, on_return)
        _mon.set_local_events(tool, code, _PY_RETURN)
    except (ValueError, TypeError):  # not a code object it can instrument
        cancel()
        return None
    return cancel


def user_codes(frame: FrameType | None, is_user: Callable[[FrameType], bool]) -> list[CodeType]:
    """The code objects of the user's frames on a stack, outermost first."""
    codes: list[CodeType] = []
    while frame is not None:
        if frame.f_code not in codes and is_user(frame):
            codes.append(frame.f_code)
        frame = frame.f_back
    codes.reverse()
    return codes


def _main_module_code(frame: FrameType | None, main_globals: dict) -> CodeType | None:
    """The code of the script's module frame on a stack (None when it is not on it)."""
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            return frame.f_code
        frame = frame.f_back
    return None


def call_at_next_line(codes: list[CodeType], main_thread: int,
                      callback: Callable[[], None]) -> Callable[[], None] | None:
    """Call `callback()` once, on the main thread, at the next line run by one of `codes`
    (a one-shot event; the tool id is freed before the call). Returns what cancels it, or
    None when no tool id is free."""
    tool = claim_tool_id()
    if tool is None:
        return None
    pending = [True]

    def cancel() -> None:
        if pending:
            pending.clear()
            free_tool_id(tool, codes)

    def on_line(code: CodeType, line: int) -> object:
        if _thread.get_ident() == main_thread and pending:
            cancel()
            callback()
        return None

    _mon.register_callback(tool, _LINE, on_line)
    for code in codes:
        _mon.set_local_events(tool, code, _LINE)
    return cancel


def top_level_boundaries(source: bytes) -> dict[int, str]:
    """line → "statement", "for" or "while" for each statement of the module's body and of
    the bodies of its top-level functions (a line belongs to one body only)."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    lines: dict[int, str] = {}
    bodies = [tree.body, *(s.body for s in tree.body if isinstance(s, ast.FunctionDef))]
    for statement in (statement for body in bodies for statement in body):
        decorators = getattr(statement, "decorator_list", [])
        lines.setdefault(min([statement.lineno, *(d.lineno for d in decorators)]), "statement")
        if isinstance(statement, ast.For | ast.AsyncFor):
            lines[statement.lineno] = "for"
        elif isinstance(statement, ast.While):
            lines[statement.lineno] = "while"
    return lines


def called_from_module(frame: FrameType | None, main_globals: dict,
                       boundaries: Callable[[], dict[int, str]]) -> CodeType | None:
    """The code of the script's top-level function that its module frame is calling, if any,
    unless a top-level loop calls it (its next iteration is the resume point then, and the
    function's code is left alone: arming it would undo a `DISABLE` of the program's own
    monitoring tool there on 3.13)."""
    inner = None
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            if inner is None or inner.f_globals is not main_globals or "." in inner.f_code.co_qualname:
                return None  # a method or nested function has no resume points: not worth its lines
            return None if in_top_level_loop(frame.f_lineno, boundaries()) else inner.f_code
        inner, frame = frame, frame.f_back
    return None


def in_top_level_loop(line: int, boundaries: dict[int, str]) -> bool:
    """Whether module line `line` is inside the body of a top-level loop."""
    start = max((n for n in boundaries if n <= line), default=None)  # where its statement starts
    return start is not None and start != line and boundaries[start] in ("for", "while")


class Monitor:
    """Arms LINE events on the user's running code on request; nothing runs otherwise."""

    def __init__(self, main_globals: dict, main_thread: int, is_user: Callable[[FrameType], bool],
                 on_safe_point: Callable[[FrameType, str | None], None],
                 boundaries: Callable[[], dict[int, str]]) -> None:
        self._main_globals: dict | None = main_globals
        self._is_user = is_user
        self._main_thread = main_thread
        self._on_safe_point = on_safe_point
        self._boundaries = boundaries
        self._lock = _thread.allocate_lock()
        self._tool: int | None = None
        self._boundary_codes: list[CodeType] = []  # the module's and main()'s, while waiting
        self._armed: list[CodeType] = []
        self._waiting_for_boundary = False
        self._armed_at = 0.0
        self._closed = False

    @property
    def armed(self) -> bool:
        return self._tool is not None

    @property
    def waiting_for_boundary(self) -> bool:
        """Armed on the module code only, for a resume point (functions not armed yet)."""
        return self._tool is not None and self._waiting_for_boundary

    def request_safe_point(self, frame: FrameType | None) -> None:
        """Have the user's code call back at the script's next resume point, or else its next line.

        Called from the timer thread with the main thread's innermost frame.
        """
        with self._lock:
            if self._closed or self._main_globals is None:
                return
            codes = user_codes(frame, self._is_user)
            if not codes:
                return
            if self._tool is None:
                tool = claim_tool_id()
                if tool is None:  # every id is taken: this tick is skipped
                    return
                self._tool = tool
                _mon.register_callback(tool, _LINE, self._on_line)
                module = codes[0] if codes[0] is _main_module_code(frame, self._main_globals) else None
                function = (called_from_module(frame, self._main_globals, self._boundaries)
                            if module is not None else None)
                self._boundary_codes = [c for c in (module, function) if c is not None]
                self._waiting_for_boundary = module is not None
                self._armed_at = time.monotonic()
                self._arm(self._boundary_codes if module is not None else codes)
            elif self._waiting_for_boundary:  # a whole interval without a module line
                self._waiting_for_boundary = False
                self._arm(codes)

    def _arm(self, codes: list[CodeType]) -> None:
        for code in codes:
            if code not in self._armed:
                _mon.set_local_events(self._tool, code, _LINE)
                self._armed.append(code)

    def disarm(self) -> None:
        """Switch the events off and free the tool id (idempotent, from any thread)."""
        with self._lock:
            if self._tool is not None:
                tool, self._tool = self._tool, None
                free_tool_id(tool, self._armed)
                self._armed = []
                self._boundary_codes = []

    def _on_line(self, code: CodeType, line: int) -> object:
        if _thread.get_ident() != self._main_thread:
            return None  # another thread runs the script's code: not a DISABLE, the main one may
        frame = sys._getframe(1)
        boundary = None
        if self._waiting_for_boundary and code in self._boundary_codes:
            kind = self._boundaries().get(line)
            if kind is None and time.monotonic() - self._armed_at < BOUNDARY_PATIENCE:
                return None  # keep waiting for a top-level statement or loop boundary
            if kind == "for":
                import opcode

                at_next_item = code.co_code[frame.f_lasti] == opcode.opmap["FOR_ITER"]
                kind = "loop" if at_next_item else "statement"
            elif kind == "while":
                kind = "loop"
            boundary = kind
        self.disarm()
        self._on_safe_point(frame, boundary)
        return None

    def close(self) -> None:
        """Switch every event off, free the tool id and let go of the script (idempotent)."""
        self._closed = True
        try:
            self.disarm()
        except Exception:
            pass
        self._main_globals = None
