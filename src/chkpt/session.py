"""The driver of one traced process: decides when checkpoints are taken, and takes them.

A Session ties the effective config and the monitor (periodic safe points) to the
checkpoint writer, for the triggers its Watch (watch.py) reports: the timer's tick, exit,
an unhandled exception, SIGTERM, a thread's crash, and the explicit API. The watch makes it
at the first of those and passes itself in; the session never imports the start-up side.
Capture, serialization and the store are imported at the first checkpoint.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from chkpt import guard, records, unseen
from chkpt import monitor as _monitor
from chkpt.monitor import BOUNDARY_PATIENCE, Monitor
from chkpt.usercode import UserCode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType, TracebackType
    from typing import Any

    from chkpt.config import Config
    from chkpt.watch import Watch
    from chkpt.writer import Writer


_traceback_of = BaseException.__dict__["__traceback__"].__get__  # not exc.__traceback__: its class's code could run


_PACKAGE = os.path.dirname(__file__) + os.sep


def _running(frame: FrameType | None, code: CodeType | None) -> bool:
    """Whether a frame on the stack from `frame` out runs `code`."""
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _runpy(frame: FrameType) -> bool:
    return dict.get(frame.f_globals, "__name__") == "runpy"


def _chkpt(frame: FrameType) -> bool:
    """Whether the frame is chkpt's (`python -m chkpt` runs its `__main__.py` as `__main__`:
    known by its file)."""
    return frame.f_code.co_filename.startswith(_PACKAGE)


# Periodic checkpoints may pause the program for at most this share of its time: a checkpoint
# that took P seconds (a slow disk, a lot of changed data) is followed by none for P / share.
MAX_PAUSE_SHARE = 0.05


def within_pause_share(since_last: float, last_pause: float) -> bool:
    """Whether pausing again `since_last` seconds after a checkpoint that paused the program for
    `last_pause` seconds keeps pauses within MAX_PAUSE_SHARE of its time."""
    return since_last * MAX_PAUSE_SHARE >= last_pause


def periodic_due(since_last: float, interval: float, last_pause: float) -> bool:
    """Whether a periodic checkpoint may be taken `since_last` seconds after the previous one,
    which paused the program for `last_pause` seconds."""
    # half an interval: the tick that arms it comes once per interval, and the safe point after
    return since_last >= interval * 0.5 and within_pause_share(since_last, last_pause)


class Session:
    """Everything chkpt decides for one traced process."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        if watch.config is None:  # no config source existed at start-up: look again now
            from chkpt import config

            watch.config = config.report(config.load(watch.config_dir))
        self.config: Config = watch.config
        self.closed = False
        self.tracked: dict[str, Any] = {}
        self._pause_depth = 0
        self._busy = False
        self._last_checkpoint = float("-inf")  # none yet: the first tick is due
        self._last_pause = 0.0  # how long the previous checkpoint paused the program
        self._writer: Writer | None = None
        self._boundary_lines: dict[int, str] | None = None
        # the script's main(): (name, lines of the statement calling it), or () when it has none;
        # its code once a checkpoint was taken inside it, the PY_RETURN hook's cancel while set
        self._main_call: tuple[str, int, int] | tuple[()] | None = None
        self._main_code: CodeType | None = None
        self._cancel_return: Callable[[], None] | None = None
        self._main_returned = False
        self._main_lock = _thread.allocate_lock()
        config = self.config
        self.user_code = UserCode(watch.main_globals, watch.target_file, config.user_code,
                                  config.user_code_include, config.user_code_exclude)
        self.monitor = Monitor(watch.main_globals, watch.main_thread, self.user_code.frame,
                               self._on_safe_point, self._boundaries)
        guard.on_disable(watch.close)

    def close(self) -> None:
        """Stop watching and let go of everything of the program's (later triggers do nothing)."""
        if not self.closed:
            self.closed = True
            self.monitor.close()
            self._stop_following_main()
            self.user_code.close()
        self.tracked = {}
        self._writer = None

    def forget_run(self) -> None:
        """In a forked child: the parent's open run must never be written from here."""
        self._writer = None
        self.close()

    # -- the user's API -------------------------------------------------------------------------

    def explicit_snapshot(self, label: str) -> None:
        self.take("explicit", sys._getframe(2), label=label)

    def track(self, obj: Any, name: str) -> None:
        self.tracked[name] = obj

    def pause(self) -> None:
        self._pause_depth += 1

    def resume(self) -> None:
        self._pause_depth = max(0, self._pause_depth - 1)

    # -- triggers -------------------------------------------------------------------------------

    def on_tick(self, frame: FrameType | None) -> float:
        """The timer's tick, in the timer thread with the main thread's innermost frame: it
        only arms the monitor. Returns the seconds until the next tick: an interval, but
        BOUNDARY_PATIENCE while nothing is saved yet and the checkpoint waits for a module
        frame that runs no line (the script sits in `main()`), so a run has data within seconds."""
        interval = self.config.interval
        self._let_go_of_main(frame)
        since = time.monotonic() - self._last_checkpoint
        if (periodic_due(since, interval, self._last_pause) and not self._busy
                and not self._pause_depth and not self.closed):
            self.monitor.request_safe_point(frame)
        nothing_saved = self._writer is None or self._writer.run is None
        if nothing_saved and self.monitor.waiting_for_boundary:
            return min(interval, BOUNDARY_PATIENCE)
        return interval

    def _boundaries(self) -> dict[int, str]:
        """The script's top-level statement and loop lines (parsed once, at the first need)."""
        if self._boundary_lines is None:
            from chkpt.monitor import top_level_boundaries

            self._boundary_lines = top_level_boundaries(self.watch.source) if self.watch.source else {}
        return self._boundary_lines

    def follow_main(self, frame: FrameType) -> None:
        """At a checkpoint taken inside the script's main(), or when a resumed run enters the
        main() resume rewrote (its locals saved as they were, not final), have main()'s return
        to the module frame take the "return" checkpoint (its final locals). A tool id is
        claimed for that only now, when one of chkpt's is free, and
        freed at that return, or at a tick that finds main() gone (it raised)."""
        with self._main_lock:
            if self.closed or self._main_returned or self._cancel_return is not None \
                    or self.watch.main_globals is None:
                return
            if self._main_call is None:
                source = self.watch.source
                self._main_call = (_monitor.main_call(source) if source else None) or ()
            if not self._main_call:
                return
            found = _monitor.main_frame(frame, self.watch.main_globals, self._main_call)
            if found is None:
                return
            self._main_code = found.f_code
            self._cancel_return = _monitor.call_at_return(found.f_code, self.watch.main_thread,
                                                          self.watch.main_globals, self._on_main_return)

    def _let_go_of_main(self, frame: FrameType | None) -> None:
        """At a tick (the main thread's stack): free the return hook's id if main() is gone."""
        with self._main_lock:
            if self._cancel_return is not None and frame is not None and not _running(frame, self._main_code):
                self._stop_following_main()

    def _stop_following_main(self) -> None:
        if self._cancel_return is not None:
            cancel, self._cancel_return = self._cancel_return, None
            cancel()

    def _on_main_return(self, frame: FrameType) -> None:
        """main() returns: its locals are saved now, and not held (their finalizers run when
        they would without chkpt)."""
        self._main_returned = True
        self._cancel_return = None
        self.take("return", frame)

    def _main_not_final(self, frames: list[FrameType]) -> str | None:
        """At the end of the run: main()'s name when its locals were saved by a checkpoint
        taken inside it, but neither at its return nor in this one (no tool id was free)."""
        code = self._main_code
        if code is None or self._main_returned or any(f.f_code is code for f in frames):
            return None
        return code.co_name

    def _on_safe_point(self, frame: FrameType, boundary: str | None) -> None:
        if not self._pause_depth:
            self.take("periodic", frame, boundary=boundary)

    def at_exit(self, exc: BaseException | None) -> bool:
        """The exit or crash checkpoint, from the watch's atexit handler (which runs last);
        True when the script died of `exc`."""
        if exc is not None and self._died_of(exc):
            self.take("crash", None, exc=exc, final_status="crashed")
            return True
        self.take("exit", None, final_status="finished")
        return False

    def _died_of(self, exc: BaseException) -> bool:
        """Whether `exc` (`sys.last_exc` at exit) is the exception the script died of: one that
        left the script's top-level code, the process's outermost frame but for those of what
        started the script (runpy for `-m`; chkpt's runner, and whatever started chkpt). An
        exception that a REPL run by the script showed (`code.InteractiveInterpreter` sets
        `sys.last_exc` too) was caught in the REPL's code, which is below the script's: its
        traceback starts there (3.12), or in the code it ran for the REPL, called by it (3.13)."""
        tb = _traceback_of(exc)
        while tb is not None and (_runpy(tb.tb_frame) or _chkpt(tb.tb_frame)):
            tb = tb.tb_next
        if tb is None:
            return False
        frame = tb.tb_frame
        if frame.f_globals is not self.watch.main_globals or frame.f_code.co_name != "<module>":
            return False
        back = frame.f_back
        while back is not None and not _chkpt(back):  # above chkpt's runner: what started chkpt
            if not _runpy(back):
                return False
            back = back.f_back
        return True

    # -- taking a checkpoint --------------------------------------------------------------------

    def target_frames(self, frame: FrameType | None, tb: TracebackType | None) -> list[FrameType]:
        """Frames of the user's code, innermost first, from a stack or a traceback."""
        frames: list[FrameType] = []
        if tb is not None:
            while tb is not None:
                frames.append(tb.tb_frame)
                tb = tb.tb_next
            frames.reverse()
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        return [f for f in frames if self.user_code.frame(f)]

    def _position(self, trigger: str, frames: list[FrameType], boundary: str | None) -> dict[str, Any]:
        """Where the checkpoint stands: module or function frame, resume boundary (a top-level
        statement or loop iteration), and the user's frames outermost first (resume finds the
        running top-level statement there, and the module function main() was calling)."""
        main_globals = self.watch.main_globals
        at_top = bool(frames) and frames[0].f_code.co_name == "<module>" and frames[0].f_globals is main_globals
        # a periodic checkpoint at a boundary is a resume point; so is a top-level snapshot() (right after it);
        # and one taken in a function of the user's modules, which resume can continue inside (before its line)
        in_module = bool(frames) and frames[0].f_globals is not main_globals
        resumable = boundary is not None or (at_top and trigger == "explicit") or (in_module and trigger == "periodic")
        stack = [records.frame_entry(f.f_code.co_name, f.f_lineno) if f.f_globals is main_globals
                 else records.frame_entry(f.f_code.co_qualname, f.f_lineno, f.f_code.co_filename,
                                          str(f.f_globals.get("__name__", "")))
                 for f in reversed(frames)]
        return records.position(at_top, boundary, resumable, stack)

    def take(self, trigger: str, frame: FrameType | None, **details: Any) -> None:
        """Take one checkpoint now, out of sight of the program's profilers and monitoring tools
        (unseen.py); chkpt's own failure never reaches the user's code."""
        unseen.run(lambda: self._take(trigger, frame, **details))

    def _take(
        self,
        trigger: str,
        frame: FrameType | None,
        *,
        label: str = "",
        exc: BaseException | None = None,
        final_status: str | None = None,
        boundary: str | None = None,
    ) -> None:
        if self.closed or self._busy:
            return
        if (trigger == "exit" and self._writer is None and not self.tracked
                and self.watch.nothing_to_save()):
            return
        self._busy = True
        started = time.monotonic()
        try:
            from chkpt.writer import RunFacts, Writer

            if self._writer is None:
                watch = self.watch
                facts = RunFacts(script=watch.target_file, argv=watch.argv, started=watch.started,
                                 main_thread=watch.main_thread, source=watch.source, extra=watch.run_meta)
                self._writer = Writer(self.config, facts, self.user_code.file)
            started = time.monotonic()  # the pause that spaces checkpoints out, imports aside
            if frame is not None and trigger in ("periodic", "explicit"):
                self.follow_main(frame)
            frames = self.target_frames(frame, _traceback_of(exc) if exc is not None else None)
            position = self._position(trigger, frames, boundary)
            if trigger in records.FINAL_TRIGGERS:
                not_final = self._main_not_final(frames)
                if not_final:
                    position["not_final"] = not_final
            self._writer.write(trigger, frames, self.watch.main_globals or {}, self.tracked, label=label, exc=exc,
                               position=position)
            if final_status is not None:
                self._writer.finish(final_status, exc=exc, exit_status=self.watch.exit_status)
        except Exception as error:
            self.watch.fail(error, f"the {trigger} checkpoint")
        finally:
            self._busy = False
            self._last_checkpoint = time.monotonic()
            self._last_pause = self._last_checkpoint - started
            salience = sys.modules.get("chkpt.salience")
            if salience is not None:
                salience.forget()  # no class of the program's is held between checkpoints

