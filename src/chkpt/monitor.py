"""The sys.monitoring tool: no callback at all between checkpoints.

A per-line callback is what made the seed prototype 5x slower, so the target file runs
with every event off. When a periodic checkpoint falls due:

1. the watch's timer thread (watch.py) wakes and has the session's tick handler run on the
   main thread at its next bytecode boundary, through `_thread.interrupt_main`;
2. the handler turns LINE events on for the code objects of the target file only (the
   module code and every function, class body and comprehension nested in it);
3. the next LINE event in the target file calls back with its frame. CPython re-instruments
   code that is already executing, so a top-level loop that never re-enters its frame is
   reached too. LINE is switched off at once and the checkpoint is taken at that line,
   between two statements of the user's code.

Resume points: a due checkpoint first arms the module code only and waits for a top-level
statement boundary or the header of a top-level loop between two iterations (told apart
from the loop's first entry by the instruction at f_lasti being FOR_ITER), so that
`chkpt resume` can restart there. A boundary that does not come within BOUNDARY_PATIENCE
seconds of module-level lines gives way to the next module line; when the module frame does
not run a line for a whole interval (the script is deep inside one long function call), the
next tick arms every code object of the file and the checkpoint is taken in that function.

For `python -m pkg.mod` the main module's file is known only once runpy starts it: a
global PY_START callback waits for the code that runs in __main__'s namespace, then switches
itself off (every other code object costs one callback, then DISABLE).
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

_mon = sys.monitoring
_LINE = _mon.events.LINE
_PY_START = _mon.events.PY_START
_PREFERRED_TOOL_IDS = (4, 3, 5, 2)
BOUNDARY_PATIENCE = 2.0


def _claim_tool_id() -> int:
    for tool_id in _PREFERRED_TOOL_IDS:
        if _mon.get_tool(tool_id) is None:
            _mon.use_tool_id(tool_id, "chkpt")
            return tool_id
    raise RuntimeError("no free sys.monitoring tool id")


def nested_codes(code: CodeType) -> list[CodeType]:
    """`code` and every code object defined inside it."""
    found = [code]
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            found.extend(nested_codes(const))
    return found


def top_level_boundaries(source: bytes) -> dict[int, str]:
    """line → "statement", "for" or "while" for each top-level statement of a module."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    lines: dict[int, str] = {}
    for statement in tree.body:
        decorators = getattr(statement, "decorator_list", [])
        lines[min([statement.lineno, *(d.lineno for d in decorators)])] = "statement"
        if isinstance(statement, ast.For | ast.AsyncFor):
            lines[statement.lineno] = "for"
        elif isinstance(statement, ast.While):
            lines[statement.lineno] = "while"
    return lines


class Monitor:
    """Arms LINE events on the target file's code on request; nothing runs otherwise."""

    def __init__(self, main_globals: dict,
                 on_safe_point: Callable[[FrameType, dict[str, object]], None]) -> None:
        self.main_globals = main_globals
        self.target_file: str | None = None
        self._on_safe_point = on_safe_point
        self._tool = _claim_tool_id()
        self._codes: list[CodeType] = []
        self._armed = False
        self._waiting_for_boundary = False
        self._boundaries: Callable[[], dict[int, str]] = dict
        self._armed_at = 0.0
        self._stopped = False
        _mon.register_callback(self._tool, _LINE, self._on_line)

    # -- finding the main module ------------------------------------------------------------

    def watch_for_main_start(self, on_main_start: Callable[[CodeType], bool]) -> None:
        """Call `on_main_start(code)` when the __main__ module's code starts (for -m)."""

        def on_start(code: CodeType, offset: int) -> object:
            if code.co_name == "<module>" and sys._getframe(1).f_globals is self.main_globals:
                _mon.set_events(self._tool, 0)
                _mon.register_callback(self._tool, _PY_START, None)
                if on_main_start(code):
                    self.set_main_code(code)
            return _mon.DISABLE

        _mon.register_callback(self._tool, _PY_START, on_start)
        _mon.set_events(self._tool, _PY_START)

    def set_main_code(self, code: CodeType) -> None:
        self.target_file = code.co_filename
        self._codes = nested_codes(code)

    def _find_main_code(self, frame: FrameType | None) -> None:
        while frame is not None:
            if frame.f_globals is self.main_globals and frame.f_code.co_name == "<module>":
                self.set_main_code(frame.f_code)
                return
            frame = frame.f_back

    # -- arming -------------------------------------------------------------------------------

    def request_safe_point(self, frame: FrameType | None,
                           boundaries: Callable[[], dict[int, str]]) -> None:
        """Have the target file call back at its next resume point, or else its next line.

        Runs in a signal handler, possibly in the middle of an import: it only sets events.
        `boundaries()` (the top-level statement and loop lines) is called later, from the
        LINE callback, where the script sits between two of its own statements.
        """
        if self._stopped:
            return
        if not self._codes:
            self._find_main_code(frame)
            if not self._codes:
                return
        if not self._armed:
            self._boundaries = boundaries
            self._waiting_for_boundary = True
            self._armed_at = time.monotonic()
            _mon.set_local_events(self._tool, self._codes[0], _LINE)
            self._armed = True
        elif self._waiting_for_boundary:  # a whole interval without a module line
            self._waiting_for_boundary = False
            for code in self._codes:
                _mon.set_local_events(self._tool, code, _LINE)

    def disarm(self) -> None:
        if not self._armed:
            return
        self._armed = False
        for code in self._codes:
            _mon.set_local_events(self._tool, code, 0)

    def _on_line(self, code: CodeType, line: int) -> None:
        frame = sys._getframe(1)
        position: dict[str, object] = {"frame": "module" if code is self._codes[0] else "function",
                                       "boundary": None}
        if self._waiting_for_boundary:
            kind = self._boundaries().get(line)
            if kind is None and time.monotonic() - self._armed_at < BOUNDARY_PATIENCE:
                return  # keep waiting for a top-level statement or loop boundary
            if kind == "for":
                import opcode

                at_next_item = code.co_code[frame.f_lasti] == opcode.opmap["FOR_ITER"]
                kind = "loop" if at_next_item else "statement"
            elif kind == "while":
                kind = "loop"
            position["boundary"] = kind
        position["resumable"] = position["boundary"] is not None
        self.disarm()
        self._on_safe_point(frame, position)

    # -- shutting down --------------------------------------------------------------------------

    def close(self) -> None:
        """Switch every event off and give the tool id back (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.disarm()
            _mon.set_events(self._tool, 0)
            _mon.register_callback(self._tool, _LINE, None)
            _mon.register_callback(self._tool, _PY_START, None)
            _mon.free_tool_id(self._tool)
        except Exception:
            pass
