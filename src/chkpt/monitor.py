"""The sys.monitoring tool: no callback at all between checkpoints.

A per-line callback is what made the seed prototype 5x slower, so the target file runs
with every event off. When a periodic checkpoint falls due:

1. a sleeping helper thread (a bare `_thread`, invisible to `threading`) wakes and calls
   `_thread.interrupt_main(SIGNUM)`: our Python-level handler then runs on the main thread
   at its next bytecode boundary. No OS signal is sent, so no system call is interrupted;
2. the handler turns LINE events on for the code objects of the target file only (the
   module code and every function, class body and comprehension nested in it);
3. the next LINE event in the target file calls back with its frame. CPython re-instruments
   code that is already executing, so a top-level loop that never re-enters its frame is
   reached too. LINE is switched off at once and the checkpoint is taken at that line,
   between two statements of the user's code.

For `python -m pkg.mod` the main module's file is known only once runpy starts it: a
global PY_START callback waits for the code that runs in __main__'s namespace, then switches
itself off (every other code object costs one callback, then DISABLE).
"""

from __future__ import annotations

import _signal
import _thread
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

_mon = sys.monitoring
_LINE = _mon.events.LINE
_PY_START = _mon.events.PY_START
_PREFERRED_TOOL_IDS = (4, 3, 5, 2)
# Delivered only through interrupt_main, never by the OS; a signal no program uses.
SIGNUM = getattr(_signal, "SIGRTMAX", getattr(_signal, "SIGVTALRM", 26))


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


class Monitor:
    """Arms LINE events on the target file's code on request; nothing runs otherwise."""

    def __init__(self, main_globals: dict, on_safe_point: Callable[[FrameType], None]) -> None:
        self.main_globals = main_globals
        self.target_file: str | None = None
        self._on_safe_point = on_safe_point
        self._tool = _claim_tool_id()
        self._codes: list[CodeType] = []
        self._armed = False
        self._timer_stop: _thread.LockType | None = None
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

    def request_safe_point(self, frame: FrameType | None) -> None:
        """Have the next line run in the target file call back (main thread only)."""
        if self._stopped or self._armed:
            return
        if not self._codes:
            self._find_main_code(frame)
            if not self._codes:
                return
        for code in self._codes:
            _mon.set_local_events(self._tool, code, _LINE)
        self._armed = True

    def disarm(self) -> None:
        if not self._armed:
            return
        self._armed = False
        for code in self._codes:
            _mon.set_local_events(self._tool, code, 0)

    def _on_line(self, code: CodeType, line: int) -> None:
        self.disarm()
        self._on_safe_point(sys._getframe(1))

    # -- the periodic timer ---------------------------------------------------------------------

    def start_timer(self, interval: float, on_tick: Callable[[FrameType | None], None]) -> None:
        """Every `interval` seconds, run `on_tick(frame)` on the main thread."""
        if interval <= 0:
            return
        _signal.signal(SIGNUM, lambda signum, frame: on_tick(frame))
        stop = _thread.allocate_lock()
        stop.acquire()
        self._timer_stop = stop

        def sleep_and_interrupt() -> None:
            while not stop.acquire(timeout=interval):
                if self._stopped:
                    return
                _thread.interrupt_main(SIGNUM)

        _thread.start_new_thread(sleep_and_interrupt, ())

    # -- shutting down --------------------------------------------------------------------------

    def close(self) -> None:
        """Switch every event off and give the tool id back (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._timer_stop is not None:
            self._timer_stop.release()
            _signal.signal(SIGNUM, _signal.SIG_DFL)
        try:
            self.disarm()
            _mon.set_events(self._tool, 0)
            _mon.register_callback(self._tool, _LINE, None)
            _mon.register_callback(self._tool, _PY_START, None)
            _mon.free_tool_id(self._tool)
        except Exception:
            pass
